"""What every target offers: an identity, a dataset, and a forward pass that records sites."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from theorycraft.errors import TargetError
from theorycraft.spec import HookPoint, did_you_mean


@dataclass(frozen=True)
class Task:
    """How a target's final output is judged when a site is spliced. ``read(output, inputs)``
    returns (rows [M, C], references): for ``"logits"`` rows are class scores (compared by KL and
    top-1) and references the true labels [M] (or None: the loss is then the KL to the clean
    output); for ``"vector"`` rows are compared by mean squared error to references [M, C], or to
    the clean output where references are None. ``answers``: the rows of each example are its
    answer (an arithmetic model's digits), so an example is right when all of them are."""

    output: str  # "logits" | "vector": what the target's final output is
    read: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray | None]]
    answers: bool = False  # rows come as one equal group per example, its answer: exact match is defined


def _whole_output(output: np.ndarray, inputs: np.ndarray):
    return output.reshape(len(output), -1), None


def _last_axis_rows(output: np.ndarray, inputs: np.ndarray):
    return output.reshape(-1, output.shape[-1]), None


def _next_token(output: np.ndarray, inputs: np.ndarray):
    """Logits [N, T, V] at each position but the last, judged on the token that follows."""
    return output[:, :-1].reshape(-1, output.shape[-1]), np.asarray(inputs)[:, 1:].reshape(-1)


OUTPUT_ONLY = Task("vector", _whole_output)  # any model: how far the output moves from the clean one
LOGITS = Task("logits", _last_axis_rows)  # scores over classes (the last axis); no labels: KL to the clean output
NEXT_TOKEN = Task("logits", _next_token)  # a language model: next-token loss, KL and top-1 at every position


@dataclass(frozen=True)
class Shift:
    """A named off-distribution dataset of a target (``--shift NAME``): what it changes, in a
    line, and its data, ``dataset(n, seed) -> inputs`` like the target's own."""

    description: str
    dataset: Callable[[int | None, int], np.ndarray]

Replacement = Callable[[torch.Tensor], torch.Tensor]
INPUT_DTYPES = {"tokens": torch.long, "vectors": torch.float32}  # a target's input kind -> its tensor type


class Target:
    """A model (or a recording of one) that activations are captured from.

    ``identity`` changes whenever the weights do, so cached activations are never confused.
    ``input_kind`` is ``"tokens"`` ([N, T] int ids) or ``"vectors"`` ([N, D] floats).
    """

    name: str
    identity: str
    input_kind: str = "tokens"
    vocab_size: int | None = None
    shift_hint: str = "only builtin: targets have them"  # what to do instead, where a target has no named shifts

    def dataset(self, n: int | None, seed: int, shift: str | None = None) -> np.ndarray:
        """n examples of the target's data (its training distribution), or of the named shift."""
        raise NotImplementedError

    def shifts(self) -> dict[str, str]:
        """Every named shift of the target and what it changes (``theorycraft shifts TARGET``)."""
        return {}

    def check_shift(self, shift: str | None) -> None:
        """Nothing for None or a known shift; else a TargetError naming the known ones."""
        if shift is None:
            return
        known = self.shifts()
        if not known:
            raise TargetError(f"{self.name} has no named shifts (asked for '{shift}'); {self.shift_hint}")
        if shift not in known:
            raise TargetError(f"unknown shift '{shift}' for {self.name}{did_you_mean(shift, known)}; expected one "
                              f"of: {', '.join(known)} (what each changes: theorycraft shifts {self.name})")

    def dataset_identity(self, n: int | None, seed: int) -> str:
        return f"{self.name}:n={n}:seed={seed}"

    def hooks(self) -> dict[str, tuple[int, ...]]:
        """Every hook point and its per-example shape."""
        raise NotImplementedError

    def run(self, inputs: np.ndarray, hooks: Sequence[HookPoint]) -> dict[HookPoint, np.ndarray]:
        """One forward pass over a batch; the activation at each hook, as float32 numpy."""
        raise NotImplementedError

    def record(self, inputs: np.ndarray, rows: np.ndarray, hooks: Sequence[HookPoint]) -> dict[HookPoint, np.ndarray]:
        """The activations of dataset rows ``rows`` (``inputs`` is the whole dataset, so that a
        recording can answer by row instead of by running a model)."""
        return self.run(inputs[rows], hooks)

    def check_hooks(self, hooks: Iterable[HookPoint]) -> None:
        known = self.hooks()
        for hook in hooks:
            if str(hook) not in known:
                near = _nearest(str(hook), known)
                raise TargetError(f"unknown site '{hook}' for {self.name}{did_you_mean(str(hook), known)}; "
                                  f"nearest valid sites: {', '.join(near)} (list them all: theorycraft sites {self.name})")


def _nearest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    import difflib
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.0)


def weights_identity(state: dict[str, torch.Tensor]) -> str:
    """sha256 over parameter names, shapes and bytes: the same weights, the same identity."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:32]


class TorchTarget(Target):
    """Any ``nn.Module``: a site is a module path (``blocks.0.mlp.hook_post``), read at the
    module's output, or at its input with ``:input``; ``aliases`` name other sites for some of
    them (``blocks.0.hook_resid_post`` -> ``transformer.h.0``), listed and used like them."""

    def __init__(self, name: str, module: nn.Module, dataset_fn, *, input_kind: str = "tokens",
                 vocab_size: int | None = None, forward=None, example_inputs=None,
                 shifts: Mapping[str, Shift] | None = None, aliases: Mapping[str, HookPoint] | None = None):
        self.name, self.module, self._dataset = name, module.eval(), dataset_fn
        self._aliases = dict(aliases or {})
        self._shifts = dict(shifts or {})
        self.input_kind, self.vocab_size = input_kind, vocab_size
        self._forward = forward or (lambda module, x: module(x))
        self._example = example_inputs
        self.identity = weights_identity(module.state_dict())
        self._hooks: dict[str, tuple[int, ...]] | None = None
        self.task = OUTPUT_ONLY
        self.device = torch.device("cpu")

    def to_device(self, device: str) -> "TorchTarget":
        """Run the forward passes on ``device`` (cpu, cuda, mps, auto); activations come back as
        numpy on the host wherever they were computed."""
        from ._device import resolve_device

        self.device = resolve_device(device)
        self.module.to(self.device)
        return self

    def batch_size(self, requested: int) -> int:
        """``requested``, or fewer where a batch's activations would not fit the device's memory."""
        from ._device import fitted_batch, free_bytes

        free = free_bytes(self.device)
        return requested if free is None else fitted_batch(requested, self.hooks(), free)

    def dataset(self, n: int | None, seed: int, shift: str | None = None) -> np.ndarray:
        self.check_shift(shift)
        return self._dataset(n, seed) if shift is None else self._shifts[shift].dataset(n, seed)

    def shifts(self) -> dict[str, str]:
        return {name: s.description for name, s in self._shifts.items()}

    def to_torch(self, inputs: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.array(inputs))  # a copy: inputs may be a read-only memory map
        return tensor.to(self.device, INPUT_DTYPES[self.input_kind])

    def hooks(self) -> dict[str, tuple[int, ...]]:
        if self._hooks is None:
            example = self._example if self._example is not None else self.dataset(2, 0)
            names = [name for name, _ in self.module.named_modules() if name]
            shapes = {}
            for name in names:
                for io in ("output", "input"):
                    shapes[f"{name}:{io}" if io == "input" else name] = None
            recorded = self.run(example, [HookPoint.parse(n) for n in shapes], strict=False)
            paths = {str(h): tuple(a.shape[1:]) for h, a in recorded.items()}
            aliases = {a: paths[str(real)] for a, real in self._aliases.items() if str(real) in paths}
            self._hooks = {**aliases, **paths}
        return self._hooks

    def _module_of(self, hook: HookPoint) -> tuple[nn.Module, str | None]:
        """The module a site reads (through its alias, if it is one) and which side of it."""
        real = self._aliases.get(str(hook), hook)
        return self.module.get_submodule(".".join(real.module)), real.io

    def run(self, inputs: np.ndarray, hooks: Sequence[HookPoint], strict: bool = True) -> dict[HookPoint, np.ndarray]:
        return self.intervene(inputs, hooks, strict=strict)[0]

    def output(self, inputs: np.ndarray, replace: Mapping[HookPoint, Replacement] | None = None) -> np.ndarray:
        """The model's final output (float32 numpy), with the activation at each hook in
        ``replace`` swapped for what its function returns (splicing)."""
        return self.intervene(inputs, (), replace)[1]

    @torch.no_grad()
    def intervene(self, inputs: np.ndarray, hooks: Sequence[HookPoint] = (),
                  replace: Mapping[HookPoint, Replacement] | None = None,
                  strict: bool = True) -> tuple[dict[HookPoint, np.ndarray], np.ndarray]:
        """One forward pass: (the activation at each of ``hooks``, the final output), with the
        activation at each hook in ``replace`` swapped for what its function returns first (a
        hook both replaced and recorded is recorded as replaced)."""
        out: dict[HookPoint, np.ndarray] = {}
        handles = []
        try:
            for hook, fn in (replace or {}).items():
                self.check_hooks([hook])
                module, io = self._module_of(hook)
                if io == "input":
                    handles.append(module.register_forward_pre_hook(
                        lambda m, args, fn=fn: (fn(args[0]), *args[1:])))
                else:
                    handles.append(module.register_forward_hook(lambda m, args, result, fn=fn: _swap(result, fn)))
            for hook in hooks:
                try:
                    module, io = self._module_of(hook)
                except AttributeError:
                    if strict:
                        self.check_hooks([hook])
                    continue
                if io == "input":
                    handles.append(module.register_forward_pre_hook(
                        lambda m, args, hook=hook: _record(out, hook, args[0] if args else None)))
                else:
                    handles.append(module.register_forward_hook(
                        lambda m, args, result, hook=hook: _record(out, hook, result)))
            result = self._forward(self.module, self.to_torch(inputs))
        finally:
            for handle in handles:
                handle.remove()
        if strict:
            missing = [h for h in hooks if h not in out]
            if missing:
                raise TargetError(f"site '{missing[0]}' of {self.name} is not a tensor (it produced no array)")
        result = getattr(result, "last_hidden_state", result)  # Hugging Face model outputs
        if isinstance(result, tuple):
            result = result[0]
        return out, (result.detach().float().cpu().numpy() if isinstance(result, torch.Tensor) else None)


def _swap(result, fn: Replacement):
    if isinstance(result, tuple):  # e.g. a Hugging Face layer returns (hidden_states, ...)
        return (fn(result[0]), *result[1:])
    return fn(result)


def _record(out: dict, hook: HookPoint, value) -> None:
    if isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor):
        value = value[0]  # e.g. a Hugging Face layer returns (hidden_states, ...)
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        out[hook] = value.detach().float().cpu().numpy()
