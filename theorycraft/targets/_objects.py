"""A model object handed in from Python (``target=`` on ``tc.capture``, ``infer``, ``score``,
``check``) -> Target. Each library's knowledge is one adapter, tried in ADAPTERS' order:
TransformerLens (a ``TransformerBridge`` or ``HookedTransformer``: its own hook names are the
sites), nnsight (the module it wraps), a transformers model (as ``hf:`` loads one) and any
``torch.nn.Module`` (module paths, as for ``torch:``). The capture is content-addressed as for every target: the weights' hash and the
data's."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
from torch import nn

from theorycraft.spec import HookPoint

from ._base import OUTPUT_ONLY, Target, TargetError, TorchTarget
from ._user import OUTPUTS, UserModel

SEQ_LEN = 128  # tokens per window of a language model's default data, unless it has fewer positions


def as_target(model, *, dataset=None, output: Optional[str] = None, vocab_size: Optional[int] = None) -> Target:
    """The Target of ``model``: a Target (returned as is), a ``UserModel``, or a model object
    one of ADAPTERS knows. ``dataset``: token ids [N, T] / vectors [N, D], or ``(n, seed) ->
    inputs``; default, for a model with a tokenizer, windows of the standard library's docstrings.
    ``output``: one of OUTPUTS (default "next-token" for a TransformerLens model, else None: only
    how far the output moves is judged). ``vocab_size``: default the model's, where it says (a
TransformerLens config's, or the first ``nn.Embedding``'s size)."""
    if isinstance(model, Target):
        return model
    if isinstance(model, UserModel):
        model, dataset, output, vocab_size = (model.module, model.dataset, output or model.output,
                                              vocab_size or model.vocab_size)
    for adapter in ADAPTERS:
        target = adapter(model, dataset, output, vocab_size)
        if target is not None:
            return target
    raise TargetError(f"target=: expected a torch.nn.Module (a TransformerLens model, a model wrapped by nnsight, "
                      f"any nn.Module), a theorycraft.targets.UserModel or a Target; found {type(model).__name__}")


def decoder(target) -> Optional[Callable[[int], str]]:
    """token id -> its text, for a target with a tokenizer (a text model), or a reference to an
    ``hf:`` model whose tokenizer is on this machine; else None."""
    tokenizer = getattr(target, "tokenizer", None)
    if tokenizer is None and getattr(target, "scheme", None) == "hf":
        from ._hf import local_tokenizer
        tokenizer = local_tokenizer(target.address)
    return None if tokenizer is None else (lambda token: tokenizer.decode([token]))


def data_function(dataset, tokenizer=None, n_ctx: Optional[int] = None) -> Callable[[Optional[int], int], np.ndarray]:
    """``(n, seed) -> inputs`` from what ``dataset=`` was given: a function (as is), an array
    (its first n rows), or None with a tokenizer (windows of an offline English corpus)."""
    if callable(dataset):
        return dataset
    if dataset is not None:
        data = np.asarray(dataset)
        if data.ndim < 2 or not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
            raise TargetError(f"dataset=: expected token ids [N, T] (integers) or vectors [N, D] (floats), or a "
                              f"function (n, seed) -> inputs; found an array of shape {data.shape} ({data.dtype})")
        return lambda n, seed: data[:n]
    if tokenizer is None:
        raise TargetError("target=: pass dataset= (token ids [N, T], vectors [N, D], or a function (n, seed) -> "
                          "inputs): this model has no tokenizer to read a text corpus with")
    from ._hf import stdlib_docstrings, token_windows

    length = min(SEQ_LEN, n_ctx or SEQ_LEN)
    return lambda n, seed: token_windows(tokenizer, stdlib_docstrings(), n, length, cls_sep=False)


def _described(target: TorchTarget, dataset_fn, output: Optional[str], vocab_size: Optional[int]) -> TorchTarget:
    """The target with what ``output=`` and the data say: how a splice is judged, the
    vocabulary (token inputs only), checked against the data's ids."""
    checked = UserModel(target.module, dataset_fn, output, vocab_size)  # the same checks as a torch: factory's
    sample = np.asarray(dataset_fn(2, 0))
    target.input_kind = "tokens" if np.issubdtype(sample.dtype, np.integer) else "vectors"
    target.vocab_size = checked.vocab_size if target.input_kind == "tokens" else None
    if target.vocab_size is not None and sample.size and sample.max() >= target.vocab_size:
        raise TargetError(f"dataset=: its data has token id {int(sample.max())}; expected ids below the "
                          f"vocabulary's {target.vocab_size}")
    target.task = OUTPUTS[output] if output else OUTPUT_ONLY
    target.shift_hint = "its data is the dataset= it was given; for shifted data, pass another dataset="
    return target


class HookedTarget(TorchTarget):
    """A TransformerLens model: a site is one of its hook names (``blocks.0.attn.hook_pattern``,
    ``blocks.0.hook_resid_post``; ``model.hook_dict``), read at that HookPoint's output."""

    def hooks(self) -> dict[str, tuple[int, ...]]:
        if self._hooks is None:
            example = self._example if self._example is not None else self.dataset(2, 0)
            recorded = self.run(example, [HookPoint.parse(name) for name in self.module.hook_dict], strict=False)
            self._hooks = {str(h): tuple(a.shape[1:]) for h, a in recorded.items()}
        return self._hooks

    def _module_of(self, hook: HookPoint) -> tuple[nn.Module, str | None]:
        if hook.io is not None or str(hook) not in self.module.hook_dict:
            raise AttributeError(str(hook))
        return self.module.hook_dict[str(hook)], None


def _transformer_lens(model, dataset, output, vocab_size) -> Optional[Target]:
    if not (isinstance(model, nn.Module) and type(model).__module__.startswith("transformer_lens")
            and isinstance(getattr(model, "hook_dict", None), dict)):
        return None
    cfg = model.cfg
    tokenizer = getattr(model, "tokenizer", None)
    dataset_fn = data_function(dataset, tokenizer, getattr(cfg, "n_ctx", None))
    target = HookedTarget(f"model:{type(model).__name__}", model, dataset_fn)
    target.tokenizer = tokenizer
    return _described(target, dataset_fn, output or "next-token", vocab_size or getattr(cfg, "d_vocab", None))


def _hugging_face(model, dataset, output, vocab_size) -> Optional[Target]:
    """A transformers model object (``AutoModelForCausalLM.from_pretrained(...)``): as ``hf:``
    loads one (its attention made observable in place, TransformerLens-style aliases)."""
    if not (isinstance(model, nn.Module) and type(model).__module__.startswith("transformers.")
            and hasattr(model, "config")):
        return None
    from ._hf import hf_forward, is_causal_lm, prepare_model, tl_aliases

    prepare_model(model)
    causal = is_causal_lm(model.config) or type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))  # unsaved: no architectures
    tokenizer = getattr(model, "tokenizer", None)
    positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    dataset_fn = data_function(dataset, tokenizer, positions)
    target = TorchTarget(f"model:{type(model).__name__}", model, dataset_fn, forward=hf_forward(causal),
                         aliases=tl_aliases(model))
    target.tokenizer = tokenizer
    return _described(target, dataset_fn, output or ("next-token" if causal else None),
                      vocab_size or getattr(model.config, "vocab_size", None))


def _nnsight(model, dataset, output, vocab_size) -> Optional[Target]:
    if not type(model).__module__.startswith("nnsight"):
        return None
    inner = next((m for m in (getattr(model, a, None) for a in ("_module", "_model")) if isinstance(m, nn.Module)),
                 None)  # an Envoy keeps its module as _module (0.5 and later), a 0.4 NNsight as _model
    if not isinstance(inner, nn.Module):
        raise TargetError(f"target=: this nnsight {type(model).__name__} wraps no torch module")
    tokenizer = getattr(model, "tokenizer", None)  # a LanguageModel's
    if dataset is None and tokenizer is not None:
        dataset = data_function(None, tokenizer, getattr(getattr(inner, "config", None), "n_positions", None))
    target = as_target(inner, dataset=dataset, output=output, vocab_size=vocab_size)
    target.tokenizer = getattr(target, "tokenizer", None) or tokenizer
    return target


def _module(model, dataset, output, vocab_size) -> Optional[Target]:
    if not isinstance(model, nn.Module):
        return None
    tokenizer = getattr(model, "tokenizer", None)
    dataset_fn = data_function(dataset, tokenizer)
    target = TorchTarget(f"model:{type(model).__name__}", model, dataset_fn)
    target.tokenizer = tokenizer
    first = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)  # token ids go in there
    return _described(target, dataset_fn, output, vocab_size or getattr(first, "num_embeddings", None))


ADAPTERS: Sequence[Callable] = (_transformer_lens, _nnsight, _hugging_face, _module)
