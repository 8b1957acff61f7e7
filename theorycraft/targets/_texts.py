"""The text a language model is captured on: the default offline corpus (the standard library's
docstrings), a user's text and JSONL files, and the windows of token ids cut from them."""

from __future__ import annotations

import ast
import json
import sysconfig
from functools import lru_cache
from pathlib import Path

import numpy as np

from theorycraft.files import read_bytes

from ._base import TargetError

SEQ_LEN = 128  # tokens per window, unless the model has fewer positions or --seq-len says otherwise


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


def _text_file(path) -> str:
    """A user's text file, read whole: a regular file of UTF-8 (a FIFO or a device is refused, not waited on)."""
    try:
        data = read_bytes(path)
    except (OSError, ValueError) as exc:
        raise TargetError(f"{path}: expected a readable text file ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TargetError(f"{path}:{line}: expected UTF-8 text, found the byte {data[exc.start]:#04x} "
                          f"(byte {exc.start})") from None


def _document(path, line: int, text) -> str:
    """One document as the tokenizer needs it: a string of valid Unicode (no lone surrogates)."""
    where = f"{path}:{line}" if line else str(path)
    if not isinstance(text, str):
        raise TargetError(f"{where}: expected a JSON object with a string \"text\" field, found "
                          f"{'null' if text is None else type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TargetError(f"{where}: expected valid Unicode text, found a lone surrogate "
                          f"{text[exc.start]!r} at character {exc.start}") from None
    return text


def read_texts(text_files=(), jsonl_files=()) -> tuple[str, ...]:
    """User data: plain text files (one document each) and JSONL files with a "text" field."""
    texts = [_document(path, 0, _text_file(path)) for path in text_files]
    for path in jsonl_files:
        for k, line in enumerate(_text_file(path).splitlines()):
            if line.strip():
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):
                    raise TargetError(f"{path}:{k + 1}: expected a JSON object with a \"text\" field, found "
                                      f"invalid (or too deeply nested) JSON") from None
                if not isinstance(record, dict) or "text" not in record:
                    raise TargetError(f"{path}:{k + 1}: expected a JSON object with a \"text\" field") from None
                texts.append(_document(path, k + 1, record["text"]))
    return tuple(texts)


def _prefix(text: str, tokens: int) -> str:
    """Enough of ``text`` to give ``tokens`` tokens, cut before whitespace so the words kept split
    as they do in the whole text: a 50 MB line is not tokenized whole when a few windows are asked
    for (a token is rarely more than 8 characters; the caller asks again for more if not)."""
    size = tokens * 8 + 1024
    if len(text) <= size:
        return text
    cut = max(text.rfind(" ", 0, size), text.rfind("\n", 0, size))
    return text[: cut if cut > 0 else size]


def token_windows(tokenizer, texts, n: int | None, seq_len: int = SEQ_LEN, cls_sep: bool = True) -> np.ndarray:
    """Windows of seq_len token ids cut from the concatenated texts (no padding): [CLS] + body +
    [SEP] for an encoder (documents joined by [SEP]), plain tokens for a causal language model
    (documents joined by its end-of-text token, where it has one)."""
    body = seq_len - 2 if cls_sep else seq_len
    separator = tokenizer.sep_token_id if cls_sep else tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        need = None if n is None else n * body - len(ids)
        part = text if need is None else _prefix(text, need)
        tokens = tokenizer(part, add_special_tokens=False)["input_ids"]
        while len(part) < len(text) and len(tokens) < need:  # not enough yet: a longer prefix
            part = _prefix(text, 4 * max(need, len(part)))
            tokens = tokenizer(part, add_special_tokens=False)["input_ids"]
        ids.extend(tokens)
        if separator is not None:
            ids.append(separator)
        if n is not None and len(ids) >= n * body:
            break
    count = len(ids) // body if n is None else min(n, len(ids) // body)
    if count == 0:
        raise TargetError(f"the text is too short: expected at least {body} tokens, found {len(ids)}")
    windows = np.asarray(ids[: count * body], dtype=np.int32).reshape(count, body)
    if not cls_sep:
        return windows
    cls = np.full((count, 1), tokenizer.cls_token_id, np.int32)
    sep = np.full((count, 1), tokenizer.sep_token_id, np.int32)
    return np.concatenate([cls, windows, sep], axis=1)


def drawn_windows(windows: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """``n`` of the corpus's ``windows`` (all, with None) drawn without replacement by ``seed``:
    a data seed other than 0 chooses which windows an hf: capture holds."""
    if n is not None and n > len(windows):
        raise TargetError(f"the text holds {len(windows)} windows; expected at least the {n} asked for (--n; library: n)")
    order = np.random.default_rng(seed).permutation(len(windows))
    return windows[np.sort(order[:len(windows) if n is None else n])]
