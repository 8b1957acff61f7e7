"""target reference -> Target. Each scheme's knowledge stays in its own small function."""

from __future__ import annotations

from pathlib import Path

from theorycraft.spec import TargetRef
from theorycraft.spec._diagnostics import did_you_mean

from ._base import Target, TargetError, TorchTarget

WEIGHTS = Path(__file__).resolve().parent / "weights"


def load_target(ref: TargetRef | str, *, trust_code: bool = False) -> Target:
    """The target a theory names. ``torch:`` targets run user code and need ``trust_code=True``."""
    if isinstance(ref, str):
        scheme, _, address = ref.partition(":")
        ref = TargetRef(scheme, address)  # type: ignore[arg-type]
    loaders = {"builtin": _builtin, "hf": _hugging_face, "activations": _recorded, "torch": _user_module}
    if ref.scheme not in loaders:
        raise TargetError(f"unknown target scheme '{ref.scheme}'{did_you_mean(ref.scheme, loaders)}; "
                          f"expected one of: {', '.join(loaders)}")
    if ref.scheme == "torch" and not trust_code:
        raise TargetError(f"target '{ref}' runs your Python code; pass --trust-code (library: trust_code=True) "
                          f"if you trust it")
    return loaders[ref.scheme](ref.address)


def _builtin(name: str) -> Target:
    from safetensors.torch import load_file

    from ._builtin_models import BUILTINS

    if name not in BUILTINS:
        raise TargetError(f"unknown builtin target '{name}'{did_you_mean(name, BUILTINS)}; "
                          f"expected one of: {', '.join(BUILTINS)}")
    spec = BUILTINS[name]
    path = WEIGHTS / f"{name}.safetensors"
    if not path.exists():
        raise TargetError(f"weights of builtin:{name} are missing at {path}; train them with "
                          f"'python examples/train_targets.py {name}'")
    module = spec.build()
    module.load_state_dict(load_file(str(path)))
    vocab = getattr(getattr(module, "embed", None), "num_embeddings", None)
    target = TorchTarget(f"builtin:{name}", module, spec.dataset, input_kind=spec.input_kind, vocab_size=vocab,
                         shifts=spec.shifts())
    target.task = spec.task
    return target


def _hugging_face(address: str) -> Target:
    from ._hf import load_hf_model

    return load_hf_model(address)


def _user_module(address: str) -> Target:
    from ._user import load_user_module

    return load_user_module(address)


def _recorded(address: str) -> Target:
    from ._recorded import RecordedTarget

    return RecordedTarget(Path(address))
