"""What a fit of a plan costs in memory, priced before anything is allocated, and the refusal of
a theory that does not fit: each over-budget component at file:line:col, with its size and what
would fit.

Each kind prices itself (``Kind.param_count``, ``row_bytes``, ``solve_bytes``: its own module
knows its shapes); this module adds them up the way the fit holds them:

    learned parameters   ADAM_COPIES x 4 bytes each (value, gradient, Adam's two moments, the best so far),
                         plus what a closed-form solve of it holds (sufficient statistics)
    learned features     row_bytes x (2 x examples per step + the validation examples): a step keeps
                         the forward pass for the backward one, and the validation loss is one pass
    fixed features       row_bytes x (training + validation examples), computed once and held for the fit,
                         up to RESIDENT_BYTES (beyond it they are recomputed window by window)
    recorded sites       read from the memory-mapped shards batch by batch: one batch of each site
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from theorycraft.configs import bytes_text
from theorycraft.spec import TheoryError

from .kinds import kind_of

ADAM_COPIES = 5  # a learned parameter's value, its gradient, Adam's two moments and the best value so far
FLOAT = 4  # bytes: parameters and features are float32


@dataclass(frozen=True)
class Cost:
    """One component's size, from its kind: parameters, bytes per example, bytes of its solve."""

    params: int
    row_bytes: int  # what it computes for one example (all of its rows), float32
    solve_bytes: int = 0  # what a closed-form solve of it holds once per fit, besides its parameters


@dataclass(frozen=True)
class Budget:
    """What a fit may spend: ``limit`` bytes (``--max-memory``, else what the machine has free),
    ``batch_size`` examples per step, over ``train`` + ``validation`` examples (``data``: bytes of
    the recorded sites held in memory)."""

    limit: int
    source: str  # where the limit comes from, for the message
    batch_size: int
    train: int
    validation: int
    data: int = 0

    @classmethod
    def of(cls, max_memory: int | None, batch_size: int, train: int, validation: int, data: int = 0) -> "Budget":
        if max_memory is not None:
            return cls(max_memory, "allowed (--max-memory; library: FitConfig.max_memory)", batch_size, train,
                       validation, data)
        free, where = available_memory()
        return cls(free, f"free on this machine ({where}; --max-memory SIZE sets a limit)", batch_size, train,
                   validation, data)


def costs(plan) -> dict[str, Cost]:
    """Every component's cost, from its kind's hooks (arithmetic on the plan's widths: nothing
    allocated)."""
    out = {}
    for name, c in plan.theory.components.items():
        kind = kind_of(c)
        learned = name not in plan.fixed or name in plan.frozen
        out[name] = Cost(int(kind.param_count(name, c, plan)) if learned else 0, int(kind.row_bytes(name, c, plan)),
                         int(kind.solve_bytes(name, c, plan)) if name not in plan.fixed else 0)
    return out


def held_examples(row_bytes: int, budget: Budget) -> int:
    """Examples whose fixed features the fit holds at once: all of them while they fit in
    RESIDENT_BYTES, else a window of them, never fewer than a step's."""
    from ._stream import RESIDENT_BYTES

    every = budget.train + budget.validation
    return every if row_bytes * every <= RESIDENT_BYTES else min(every, max(RESIDENT_BYTES // max(row_bytes, 1),
                                                                           budget.batch_size))


def component_bytes(plan, name: str, cost: Cost, budget: Budget) -> int:
    """What one component costs the fit, by the rules in the module's docstring."""
    if name in plan.fixed:
        return FLOAT * cost.params + cost.row_bytes * held_examples(cost.row_bytes, budget)
    return (ADAM_COPIES * FLOAT * cost.params + cost.solve_bytes
            + cost.row_bytes * (2 * budget.batch_size + budget.validation))


def refuse_over(plan, budget: Budget) -> None:
    """A TheoryError if the fit would need more than ``budget.limit``: the largest components are
    reported (at file:line:col) until what is left fits, each with its size and what would fit in
    the room the rest leaves."""
    theory = plan.theory
    need = {name: component_bytes(plan, name, cost, budget) for name, cost in plan.costs.items()}
    total = sum(need.values()) + budget.data
    if total <= budget.limit:
        return
    reported, kept = [], total
    for name in sorted(need, key=need.get, reverse=True):
        if kept <= budget.limit:
            break
        reported.append(name)
        kept -= need[name]
    problems = [theory.diagnostic("components", name, _message(plan, name, need[name], total, kept, budget), key=True)
                for name in reported]
    if kept > budget.limit:  # the recorded sites alone do not fit
        site = next(iter(theory.sites))
        problems.append(theory.diagnostic("sites", site, (
            f"a batch of the recorded sites takes {bytes_text(budget.data)} (float32, read from the shards), over "
            f"the {bytes_text(budget.limit)} {budget.source}; allow more memory (--max-memory)"), key=True))
    raise TheoryError(problems)


def _message(plan, name: str, need: int, total: int, kept: int, budget: Budget) -> str:
    """Its size, how it is made up, and what fits in the room the components not reported leave."""
    cost = plan.costs[name]
    room = max(budget.limit - kept, 0)
    if name in plan.fixed:
        held = held_examples(cost.row_bytes, budget)
        parts = f"{bytes_text(cost.row_bytes)} of features per example x {held:,} examples held at once"
        fits = (f"at most {bytes_text(room // max(held, 1))} of features per example (fewer features), or the "
                f"features of {room // max(cost.row_bytes, 1):,} examples (capture fewer with --n)")
    else:
        step = 2 * budget.batch_size + budget.validation
        rows = cost.row_bytes * step
        parts = (f"{cost.params:,} parameters x {ADAM_COPIES * FLOAT} bytes (value, gradient, Adam's two moments, "
                 f"best so far)" + (f" + {bytes_text(cost.solve_bytes)} for its closed-form solve" if cost.solve_bytes
                                    else "")
                 + f" + {bytes_text(cost.row_bytes)} of features per example x {step:,} (2 x batch size "
                   f"{budget.batch_size} + {budget.validation:,} validation examples)")
        if rows < room and need > rows:  # what scales with its parameters must shrink to fit what is left
            fits = f"at most ~{int(cost.params * (room - rows) / (need - rows)):,} parameters at this batch size"
        else:
            fits = (f"its features alone need {bytes_text(rows)}: lower --batch-size, capture fewer examples, or "
                    f"make it narrower")
    return (f"{plan.theory.components[name].kind} component '{name}' needs {bytes_text(need)} to fit ({parts}); "
            f"the theory needs {bytes_text(total)} in all, over the {bytes_text(budget.limit)} {budget.source}; "
            f"without the components reported here it needs {bytes_text(kept)}, which leaves {bytes_text(room)}: "
            f"{fits}")


def available_memory() -> tuple[int, str]:
    """(bytes free, where that was read): Linux's MemAvailable, else the free physical pages; on
    an accelerator, the smaller of that and the device's free memory."""
    free, where = None, None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free, where = int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
                    break
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free, where = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free physical pages"
        except (ValueError, OSError, AttributeError):
            free, where = 2 ** 63 - 1, "unknown: no limit"
    device = _device_free()
    if device is not None and device < free:
        free, where = device, "the accelerator's free memory"
    return free, where


def _device_free() -> int | None:
    import jax

    try:
        device = jax.devices()[0]
        if device.platform == "cpu":
            return None
        stats = device.memory_stats() or {}
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    except (KeyError, RuntimeError, TypeError, ValueError):
        return None


def data_bytes(site_shapes: Mapping[str, tuple], examples: int) -> int:
    """The recorded sites, float32, one batch of at most ``examples`` (``_stream.ROWS`` rows of
    each site): what the fit reads from the shards at once."""
    from math import prod

    from ._stream import ROWS, rows_per_example

    return FLOAT * sum(min(examples, max(1, ROWS // rows_per_example(s))) * prod(s) for s in site_shapes.values())
