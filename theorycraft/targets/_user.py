"""``torch:module.path:factory``: your own ``nn.Module``. The factory returns ``(module,
dataset_fn)``, or a ``UserModel`` that also says what the output is and the input vocabulary, so
splicing is judged by the right loss and search knows how many tokens there are. Runs your code."""

from __future__ import annotations

import importlib
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from torch import nn

from ._base import LOGITS, NEXT_TOKEN, OUTPUT_ONLY, TargetError, TorchTarget

OUTPUTS = {  # what a UserModel's output may be declared as -> how a splice is judged
    "logits": LOGITS,  # class scores on the last axis: KL and top-1 against the clean output
    "next-token": NEXT_TOKEN,  # a language model's logits [N, T, vocab]: next-token loss, KL and top-1
    "regression": OUTPUT_ONLY,  # any numbers: mean squared change from the clean output
}


@dataclass(frozen=True)
class UserModel:
    """What a ``torch:`` factory returns to describe its model: the module, ``dataset(n, seed) ->
    inputs`` ([N, T] int token ids or [N, D] floats), what its output is (one of OUTPUTS; None: only
    how far it moves is judged) and, for token inputs, the vocabulary size."""

    module: nn.Module
    dataset: Callable[[Optional[int], int], np.ndarray]
    output: Optional[str] = None
    vocab_size: Optional[int] = None

    def __post_init__(self):
        if not isinstance(self.module, nn.Module):
            raise TargetError(f"UserModel: expected module to be a torch.nn.Module, found {type(self.module).__name__}")
        if not callable(self.dataset):
            raise TargetError("UserModel: expected dataset to be a function dataset(n, seed) -> inputs")
        if self.output is not None and self.output not in OUTPUTS:
            raise TargetError(f"UserModel: expected output one of {', '.join(map(repr, OUTPUTS))} (or None), "
                              f"found {self.output!r}")
        if self.vocab_size is not None and (isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int)
                                            or self.vocab_size < 1):
            raise TargetError(f"UserModel: expected vocab_size to be an integer >= 1, found {self.vocab_size!r}")


@contextmanager
def _working_directory_importable():
    """The current directory first on the import path (as for ``python -c``), while the user's
    module loads and its factory runs."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def load_user_module(address: str) -> TorchTarget:
    module_path, _, factory_name = address.rpartition(":")
    if not module_path or not factory_name:
        raise TargetError(f"expected 'torch:module.path:factory', found 'torch:{address}'")
    with _working_directory_importable():
        try:
            factory = getattr(importlib.import_module(module_path), factory_name)
        except (ImportError, AttributeError) as exc:
            raise TargetError(f"cannot load factory '{factory_name}' from module '{module_path}' (looked in the "
                              f"current directory and the installed packages): {exc}") from None
        try:
            made = factory()
        except TargetError:
            raise
        except Exception as exc:  # the user's code failed: say where, not as a theorycraft bug
            raise TargetError(f"factory '{address}' raised {type(exc).__name__}: {exc}") from None
    if isinstance(made, tuple) and len(made) == 2:
        made = UserModel(*made)
    if not isinstance(made, UserModel):
        raise TargetError(f"factory '{address}' must return (module, dataset_fn) with dataset_fn(n, seed) -> inputs, "
                          f"or a theorycraft.targets.UserModel; found {type(made).__name__}")
    sample = np.asarray(made.dataset(2, 0))
    kind = "tokens" if np.issubdtype(sample.dtype, np.integer) else "vectors"
    if made.vocab_size is not None and kind == "tokens" and sample.size and sample.max() >= made.vocab_size:
        raise TargetError(f"factory '{address}': its data has token id {int(sample.max())}; expected ids below "
                          f"vocab_size {made.vocab_size}")
    target = TorchTarget(f"torch:{address}", made.module, made.dataset, input_kind=kind,
                         vocab_size=made.vocab_size if kind == "tokens" else None)
    target.task = OUTPUTS[made.output] if made.output else OUTPUT_ONLY
    target.shift_hint = "its factory returns one dataset_fn; for shifted data, write a factory that returns another"
    return target
