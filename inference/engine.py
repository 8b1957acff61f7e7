"""The engine's interface: everything scoring, search, the front (api, cli), the targets and the
benchmarks use of ``theorycraft.inference``. What is not named here is the engine's own business.
See docs/engine.md.

- plans: a theory and the recorded shapes -> widths, fixed features, the components' outputs;
- examples: the captured inputs and sites as the theory reads them, row by row, batch by batch;
- fitting: ``fit`` (closed forms, then Adam), its config, and the Adam loop's parts;
- fitted theories, interventions on them, and the processes of a cluster.
"""

from __future__ import annotations

from ._adam import Stopped, make_loss, make_step
from ._compile import Plan, component_output, fixed_inputs, init_params, make_plan, predict_site, site_rows
from ._distributed import (COORDINATOR, NUM_PROCESSES, PROCESS_ID, Cluster, allsum, cluster_from_environment,
                           initialize, is_leader, own, process_count)
from ._examples import fixed_by_site, load_examples, minibatch, site_shapes, train_means
from ._fit import FitConfig, fit
from ._fitted import FittedTheory, count_params
from ._intervene import SUBSPACE, Intervention, predict_intervened, subspace_basis, transformed_inputs
from ._ridge import ALPHAS
from ._solvers import SOLVERS, Solvers
from ._stream import RESIDENT_BYTES, batches, chunks, resident, rows_per_example, take

__all__ = [
    # plans
    "Plan", "make_plan", "init_params", "site_shapes", "site_rows", "fixed_inputs", "component_output", "predict_site",
    # examples
    "load_examples", "train_means", "resident", "take", "chunks", "batches", "rows_per_example", "RESIDENT_BYTES",
    # fitting
    "FitConfig", "fit", "Stopped", "ALPHAS", "SOLVERS", "Solvers", "make_loss", "make_step", "fixed_by_site", "minibatch",
    # fitted theories and interventions
    "FittedTheory", "count_params", "Intervention", "SUBSPACE", "predict_intervened", "subspace_basis",
    "transformed_inputs",
    # processes
    "COORDINATOR", "NUM_PROCESSES", "PROCESS_ID", "Cluster", "cluster_from_environment", "initialize", "is_leader",
    "process_count", "own", "allsum",
]
