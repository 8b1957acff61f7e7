"""Reading a capture batch by batch: every fitting and scoring path indexes the memory-mapped
shards for the rows it needs now, so what is held grows with the batch, not with the capture.

- ``ShardRows``: one array of a capture (the inputs, or a site with its position selected), read
  from its shards only where indexed; ``data[site][rows]`` is a float32 batch.
- ``chunks``: example indices cut so that a batch holds at most ``ROWS`` rows of a site (a site
  over every position has T rows per example).
- ``Windows``: seeded minibatch order for Adam. When the training split's fixed inputs fit in
  ``RESIDENT_BYTES`` they are computed once and each epoch is one permutation of it; otherwise each
  epoch shuffles blocks of consecutive examples (a shard's, at most ``block`` long), cuts the
  shuffled sequence into windows that fit, and permutes each window in memory (a shuffle buffer,
  as streaming data loaders do). Deterministic for a seed, with no permutation of the whole split.
  The order is that of the whole training split, whatever the number of processes: each process
  takes its equal part of every step (``picked``), so N processes take the steps of one.
"""

from __future__ import annotations

import mmap
from typing import Iterator, Mapping, Sequence

import numpy as np

ROWS = 8192  # rows of a site per batch of a closed-form solve or of scoring
RESIDENT_BYTES = 256 << 20  # fixed inputs of a split held at once (all of it when it fits: computed once)


class ShardRows:
    """One ``[N, ...]`` array of a capture, read from its memory-mapped shards where indexed
    (``position``: the one position kept of ``[N, T, ...]``); sites read as float32."""

    def __init__(self, parts: Sequence[tuple[int, int, np.ndarray]], position: int | list[int] | None = None,
                 dtype=np.float32):
        self.parts = list(parts)  # (first example, end, memory-mapped array)
        first = self.parts[0][2]
        tail = first.shape[1:] if position is None else first[:1, position].shape[1:]
        self.n = self.parts[-1][1]
        self.shape = (self.n, *tail)
        self.dtype = np.dtype(dtype if dtype is not None else first.dtype)
        self.position = position

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):
        if isinstance(index, tuple):  # rows first, then the rest in memory
            return self[index[0]][(slice(None), *index[1:])]
        if isinstance(index, (int, np.integer)):
            return self[np.array([index])][0]
        rows = np.arange(self.n)[index] if isinstance(index, slice) else np.asarray(index)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = np.where(rows < 0, rows + self.n, rows)
        if len(rows):
            low, high = rows.min(), rows.max()
            for start, stop, array in self.parts:
                if start <= low and high < stop:  # one shard holds every row: one copy, not two
                    block = array[rows - start] if self.position is None else array[rows - start][:, self.position]
                    release(array)
                    return np.asarray(block, self.dtype)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        for start, stop, array in self.parts:
            inside = np.flatnonzero((rows >= start) & (rows < stop))
            if len(inside):
                local = rows[inside] - start
                out[inside] = array[local] if self.position is None else array[local][:, self.position]
                release(array)
        return out

    def __array__(self, dtype=None, copy=None):  # all of it: only for small captures
        return self[:] if dtype is None else self[:].astype(dtype)


def release(array: np.ndarray) -> None:
    """Drop a memory-mapped array's pages from this process's resident set once a batch has been
    copied out: they stay in the kernel's page cache (reading them again copies memory, not disk),
    but a pass over the capture no longer leaves all of it counted in the process's RSS, which
    then grows with the capture, not with the batch. Arrays in memory are left alone."""
    mapped = getattr(array, "_mmap", None)  # np.memmap's mapping (np.load(mmap_mode="r"))
    if mapped is not None and hasattr(mapped, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


def capture_rows(theory, acts) -> dict[str, ShardRows]:
    """The inputs and every site of ``theory`` (positions selected), read lazily from ``acts``."""
    inputs = acts.inputs()
    data = {"inputs": ShardRows([(0, len(inputs), inputs)], dtype=None)}
    for name, site in theory.sites.items():
        hook = str(site.hook)
        if hook not in acts.sites:
            acts.site(hook)  # the store's error, naming what was captured
        parts = [(*shard["rows"], acts._shard_array(shard, hook)) for shard in acts.manifest["shards"]]
        data[name] = ShardRows(parts, site.kept)
    return data


def resident(data: Mapping[str, ShardRows], budget: int = RESIDENT_BYTES) -> Mapping[str, np.ndarray]:
    """``data`` read into memory whole when all of it fits in ``budget`` bytes, else as it is: a
    search reads the same rows of a small capture thousands of times, and each read from the
    shards copies (after ``release``, faults in) its pages again."""
    size = sum(len(a) * int(np.prod(a.shape[1:])) * a.dtype.itemsize for a in data.values())
    return {k: np.asarray(a) for k, a in data.items()} if size <= budget else data


class Taken(Mapping):
    """The rows ``index`` of every array of ``data``, each read (into memory, then kept) when it is
    first looked up: a site's batch reads that site and what its predictors read, not every site
    of the theory (which made each site's fit read the whole capture)."""

    def __init__(self, data: Mapping, index: np.ndarray):
        self._data, self._index, self._read = data, index, {}

    def __getitem__(self, key):
        if key not in self._read:
            self._read[key] = self._data[key][self._index]
        return self._read[key]

    def __contains__(self, key) -> bool:  # without reading it
        return key in self._data

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def take(data: Mapping, index: np.ndarray) -> Taken:
    """The rows ``index`` of every array of ``data``, read when looked up (``Taken``)."""
    return Taken(data, index)


def rows_per_example(shape: tuple) -> int:
    """Rows a site of per-example ``shape`` has per example: T for ``[T, D]``, else 1."""
    return shape[0] if len(shape) == 2 else 1


def chunks(index: np.ndarray, per_example: int = 1, rows: int | None = None) -> Iterator[np.ndarray]:
    """``index`` in consecutive pieces of at most ``rows`` rows (default ``ROWS``; at least one
    example each)."""
    size = max(1, (rows or ROWS) // max(per_example, 1))
    for start in range(0, len(index), size):
        yield index[start:start + size]


def batches(site_shapes: Mapping[str, tuple], index: np.ndarray, scale: int = 1) -> list[np.ndarray]:
    """``index`` in pieces of at most ``scale`` x ``ROWS`` rows over all the sites together, so a
    batch's recorded sites and predictions stay bounded however many sites there are."""
    per_example = sum(rows_per_example(shape) for shape in site_shapes.values())
    return list(chunks(index, per_example, scale * ROWS))


class Windows:
    """The examples of each Adam step (positions into the training split), seeded; see the module
    docstring. ``window`` examples are held at once (all of them: ``resident``)."""

    def __init__(self, n: int, per_step: int, seed: int, window: int, blocks: Sequence[tuple[int, int]] = ()):
        self.n, self.per_step, self.seed = n, per_step, seed
        self.per_epoch = max(n // per_step, 1)
        self.resident = window >= n
        self.window = n if self.resident else max(per_step, window // per_step * per_step)
        size = max(per_step, self.window // 8)  # blocks: a shard's examples, at most `size` long
        bounds = list(blocks) or [(0, n)]
        self.blocks = np.array([(a, min(a + size, b)) for a, b in bounds for a in range(a, b, size)], np.int64)

    def epoch_of(self, step: int) -> tuple[int, int]:
        """(epoch, offset of the step's first example in that epoch's order)."""
        return step // self.per_epoch, (step % self.per_epoch) * self.per_step

    def members(self, epoch: int, w: int) -> np.ndarray:
        """Positions of window ``w`` of ``epoch``, in block order (resident: all, in order)."""
        if self.resident:
            return np.arange(self.n)
        blocks = self.blocks[np.random.default_rng([self.seed, epoch]).permutation(len(self.blocks))]
        ends = np.cumsum(blocks[:, 1] - blocks[:, 0])
        lo, hi = w * self.window, (w + 1) * self.window
        pieces = []
        for (a, b), end in zip(blocks, ends):
            first = end - (b - a)
            if end > lo and first < hi:
                pieces.append(np.arange(a + max(lo - first, 0), a + min(hi, end) - first))
        return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)

    def order(self, epoch: int, w: int, length: int) -> np.ndarray:
        """The shuffle of a window (resident: today's permutation of the whole split)."""
        key = [self.seed, epoch] if self.resident else [self.seed, epoch, w]
        return np.random.default_rng(key).permutation(length)

    def locate(self, step: int) -> tuple[int, int, int]:
        """(epoch, window, first row within the window's order) of one step."""
        epoch, offset = self.epoch_of(step)
        w = 0 if self.resident else offset // self.window
        return epoch, w, offset - w * self.window

    def share(self, w: int, part: int = 0, parts: int = 1) -> np.ndarray:
        """The places in window ``w``'s order that process ``part`` of ``parts`` reads over the
        window's steps (streamed windows only: every step lies whole inside its window)."""
        end = min(self.window, self.per_epoch * self.per_step - w * self.window)
        local = self.per_step // parts
        starts = np.arange(0, max(end, 0), self.per_step)
        return (starts[:, None] + part * local + np.arange(local)).reshape(-1)


def picked(order: np.ndarray, start: int, per_step: int, part: int = 0, parts: int = 1) -> np.ndarray:
    """A step's rows of its window, process ``part``'s equal slice of them (all, on one process);
    fewer examples than a batch: repeated, keeping shapes fixed."""
    rows = order[start:start + per_step]
    rows = np.resize(rows, per_step) if len(rows) < per_step else rows
    local = per_step // parts
    return rows[part * local:(part + 1) * local]
