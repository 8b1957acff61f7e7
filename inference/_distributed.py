"""Scale-out with JAX's own machinery: a 2-D device mesh (``data`` x ``model``) for one fit, and
many processes through ``jax.distributed`` (its coordinator and collectives, not ours).

- Batches are sharded on ``data``; a large parameter (a table of 30,522 rows, a wide map) is
  sharded on ``model`` along its longest axis that the model devices divide; the rest is
  replicated. Optimiser state follows its parameter (same shape, same placement).
- With several processes, each one reads its own examples (whole shards of the capture) for the
  sums: the sufficient statistics of the exact solves, the validation loss and the scorer's
  squared errors are summed across processes (``allsum``). Adam's steps are those of one
  process: each process draws the same order of the whole training split and feeds its equal
  slice of every step with ``jax.make_array_from_process_local_data`` (read from whichever
  shard holds it). Every process ends with the same parameters; only process 0 writes artifacts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from math import prod

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from theorycraft.errors import ArgumentError

MODEL_MIN_ELEMENTS = 1024  # a smaller parameter is replicated: splitting it costs more than it saves

# --- processes ------------------------------------------------------------------------------------

# the environment a cluster scheduler (or `infer --processes N`) sets for each process
COORDINATOR, NUM_PROCESSES, PROCESS_ID = "THEORYCRAFT_COORDINATOR", "THEORYCRAFT_NUM_PROCESSES", "THEORYCRAFT_PROCESS_ID"


@dataclass(frozen=True)
class Cluster:
    """Where this process stands: the coordinator's host:port, how many processes, which one."""

    coordinator: str
    num_processes: int
    process_id: int


def cluster_from_environment(environ=os.environ) -> Cluster | None:
    """The cluster this process belongs to, from THEORYCRAFT_COORDINATOR (host:port of process 0),
    THEORYCRAFT_NUM_PROCESSES and THEORYCRAFT_PROCESS_ID, the last two falling back on Slurm's
    SLURM_NTASKS and SLURM_PROCID (and the index on a Kubernetes indexed Job's
    JOB_COMPLETION_INDEX); None without a coordinator: a lone process."""
    coordinator = environ.get(COORDINATOR)
    count = environ.get(NUM_PROCESSES, environ.get("SLURM_NTASKS"))
    index = environ.get(PROCESS_ID, environ.get("SLURM_PROCID", environ.get("JOB_COMPLETION_INDEX")))
    if not coordinator:
        return None
    try:
        cluster = Cluster(coordinator, int(count or ""), int(index or ""))
    except ValueError:
        raise ArgumentError(f"{COORDINATOR} is set ({coordinator!r}), so expected integers in {NUM_PROCESSES} and "
                            f"{PROCESS_ID} (or SLURM_NTASKS and SLURM_PROCID), found {count!r} and {index!r}") from None
    if not (cluster.num_processes >= 1 and 0 <= cluster.process_id < cluster.num_processes):
        raise ArgumentError(f"expected 0 <= {PROCESS_ID} < {NUM_PROCESSES}, found process {cluster.process_id} of "
                            f"{cluster.num_processes}")
    return cluster


def initialize(cluster: Cluster) -> None:
    """Join the cluster (before anything else touches JAX): JAX's coordinator, gloo collectives
    between CPU processes."""
    if cluster.num_processes == 1:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=cluster.coordinator, num_processes=cluster.num_processes,
                               process_id=cluster.process_id)


def process_count() -> int:
    return jax.process_count()


def is_leader() -> bool:
    """Process 0 writes the artifacts and prints; the others only compute."""
    return jax.process_index() == 0


def local_rows(acts) -> np.ndarray:
    """The examples this process reads (sorted): every one on a lone process; with several,
    whole shards of the capture dealt round-robin (no two processes open the same file), or,
    where there are fewer shards than processes, equal runs of rows."""
    count, index = jax.process_count(), jax.process_index()
    if count == 1:
        return np.arange(acts.n)
    bounds = [tuple(shard["rows"]) for shard in acts.manifest["shards"]]
    if len(bounds) < count:
        edges = np.linspace(0, acts.n, count + 1).astype(int)
        return np.arange(edges[index], edges[index + 1])
    return np.concatenate([np.arange(*b) for k, b in enumerate(bounds) if k % count == index])


def own(acts, index: np.ndarray) -> np.ndarray:
    """The examples of ``index`` that this process reads (``local_rows``), in their order."""
    return index if jax.process_count() == 1 else index[np.isin(index, local_rows(acts))]


def reduce_stats(stats):
    """Ridge sufficient statistics (``_ridge.Stats``) summed over processes; a process without
    rows takes part with zeros of the others' shapes."""
    if jax.process_count() == 1:
        return stats
    from ._ridge import Stats

    f, d = (allmax(-1 if m is None else len(m)) for m in (stats.sx, stats.sy))
    if f < 0:
        return stats  # no process has rows
    names = ("sx", "sy", "xtx", "xty")
    shapes = {"sx": (f,), "sy": (d,), "xtx": (f, f), "xty": (f, d)}
    local = {k: np.zeros(shapes[k]) if getattr(stats, k) is None else getattr(stats, k) for k in names}
    return Stats(int(allsum(np.asarray(stats.n, np.int64))), **{k: allsum(v) for k, v in local.items()})


def allsum(x):
    """Σ over processes of a numpy array (the same on every process; float64 and int64 stay
    exact: their bytes travel as int32 and are added here, in process order)."""
    x = np.asarray(x)
    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils

    wide = np.ascontiguousarray(x, np.float64 if x.dtype.kind == "f" else np.int64)
    bits = wide.reshape(-1).view(np.int32)
    gathered = np.asarray(multihost_utils.process_allgather(bits))  # [processes, 2 * size]
    return gathered.view(wide.dtype).reshape(-1, *x.shape).sum(0)  # (ascontiguousarray makes 0-d 1-d)


def allsum_sparse(matrix):
    """Σ over processes of a scipy sparse matrix of one shape (its entries travel, padded to the
    largest count)."""
    if jax.process_count() == 1:
        return matrix
    from scipy import sparse

    coo = matrix.tocoo()
    count = len(coo.data)
    size = int(allmax(count))
    rows, cols, values = (np.zeros(size, np.int64) for _ in range(3))
    values = values.astype(np.float64)
    rows[:count], cols[:count], values[:count] = coo.row, coo.col, coo.data
    from jax.experimental import multihost_utils

    gather = [np.asarray(multihost_utils.process_allgather(a.view(np.int32))).view(a.dtype).reshape(-1)
              for a in (rows, cols, values)]
    return sparse.coo_matrix((gather[2], (gather[0], gather[1])), shape=matrix.shape).tocsr()


def allmax(x: int) -> int:
    """The largest of one integer over processes."""
    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.asarray([x], np.int32))))


def agree(x: int) -> bool:
    """Whether every process has the same integer (always, on one)."""
    return jax.process_count() == 1 or allmax(x) == -allmax(-x)


# --- the mesh -------------------------------------------------------------------------------------

def make_mesh(model: int = 1) -> Mesh:
    """Every device of every process as a grid [data, model]. A process's devices lie next to
    each other along ``model``, so each process holds every slice of a sharded parameter."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    local = jax.local_device_count()
    if model < 1 or local % model:
        raise ArgumentError(f"expected model shards that divide the {local} device(s) of a process, found {model}")
    return Mesh(np.array(devices).reshape(len(devices) // model, model), ("data", "model"))


def model_axis(shape: tuple, model: int) -> int | None:
    """The axis of a parameter split over the ``model`` devices: its longest that they divide
    (the rows of a tall table, the columns of a wide map); None: replicated."""
    if model == 1 or prod(shape) < MODEL_MIN_ELEMENTS:
        return None
    axes = [a for a, size in enumerate(shape) if size % model == 0]
    return max(axes, key=lambda a: (shape[a], -a)) if axes else None


class Layout:
    """Where a fit's arrays live on a mesh: state by ``model_axis``, batches on ``data``."""

    def __init__(self, mesh: Mesh):
        self.mesh = mesh
        self.data, self.model = mesh.shape["data"], mesh.shape["model"]

    def sharding(self, leaf) -> NamedSharding:
        shape = np.shape(leaf)
        axis = model_axis(shape, self.model)
        spec = [None] * len(shape)
        if axis is not None:
            spec[axis] = "model"
        return NamedSharding(self.mesh, PartitionSpec(*spec))

    def shardings(self, tree):
        return jax.tree_util.tree_map(self.sharding, tree)

    def place(self, tree):
        """Host state (the same on every process) onto the mesh."""
        def put(x):
            sharding = self.sharding(x)
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
        return jax.tree_util.tree_map(put, tree)

    def batch(self, tree):
        """This process's rows of a batch (all of it, on one process), sharded on ``data``."""
        sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        if jax.process_count() == 1:
            return jax.device_put(tree, sharding)
        return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)

    def split(self, params) -> dict:
        """Which parameters are sharded on ``model``, and along which axis: {"name/leaf": axis}."""
        flat = jax.tree_util.tree_flatten_with_path(params)[0]
        out = {}
        for path, leaf in flat:
            axis = model_axis(np.shape(leaf), self.model)
            if axis is not None:
                out["/".join(str(getattr(k, "key", k)) for k in path)] = axis
        return out


def to_host(tree):
    """Numpy copies of (possibly sharded, possibly multi-process) arrays: each process holds every
    slice of a parameter (``make_mesh``), so it assembles them from its own devices."""
    def get(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(jax.device_get(x))
        out = np.empty(x.shape, x.dtype)
        for shard in x.addressable_shards:
            out[shard.index] = np.asarray(shard.data)
        return out
    return jax.tree_util.tree_map(get, tree)


def validation_loss(loss, layout: Layout, batch, rows: int):
    """``params -> float``: the loss on the validation rows of every process. One process: the
    rows replicated over the mesh. Several: each process evaluates its own rows with the
    parameters gathered on its first device, and the row-weighted mean is summed across them
    (the loss is a mean over rows, plus penalties that every process adds alike)."""
    jitted = jax.jit(loss)
    if jax.process_count() == 1:
        placed = jax.device_put(batch, NamedSharding(layout.mesh, PartitionSpec()))
        return lambda params: float(jitted(params, placed))
    local = jax.device_put(batch, jax.local_devices()[0])

    def evaluate(params):
        value = float(jitted(to_host(params), local)) * rows if rows else 0.0
        total, count = allsum(np.array([value, rows], np.float64))
        return float(total / max(count, 1))
    return evaluate
