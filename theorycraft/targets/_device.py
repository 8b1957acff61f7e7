"""Where a target's forward passes run (``--device``): cpu, cuda, mps, or auto (the first of
cuda, mps, cpu there is), and how many examples a batch holds there so that it fits."""

from __future__ import annotations

from math import prod
from typing import Mapping

import torch

from theorycraft.configs import DEVICES

from ._base import TargetError

MEMORY_FRACTION = 0.5  # of the device's free memory, a batch's activations may take (the rest: weights, workspace)


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` names, refused clearly where this machine (or this torch) has none."""
    if name not in DEVICES:
        raise TargetError(f"unknown device '{name}'; expected one of: {', '.join(DEVICES)}")
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda" and not cuda:
        build = "this torch is a CPU build" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        raise TargetError(f"device 'cuda': no CUDA GPU is visible to torch ({build}); use --device cpu, or --device auto "
                          f"to take a GPU where there is one (library: device='cpu' or 'auto')")
    if name == "mps" and not mps:
        raise TargetError("device 'mps': no Apple GPU (Metal) is visible to torch; use --device cpu or --device auto "
                          "(library: device='cpu' or 'auto')")
    return torch.device(name)


def free_bytes(device: torch.device) -> int | None:
    """The device's free memory, or None on the CPU (a batch there is what was asked for)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
    return None


def fitted_batch(batch_size: int, site_shapes: Mapping[str, tuple], free: int | None) -> int:
    """At most ``batch_size`` examples, and no more than fit in MEMORY_FRACTION of ``free`` bytes
    when every site's float32 activation of an example is held at once (an upper bound of what
    a forward pass without gradients keeps)."""
    if free is None:
        return batch_size
    per_example = 4 * sum(prod(shape) for shape in site_shapes.values())
    return max(1, min(batch_size, int(free * MEMORY_FRACTION) // max(per_example, 1)))
