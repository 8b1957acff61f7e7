"""The library's front: parse -> capture -> infer -> score, one small function each (capture and
the front's other data access are in theorycraft._captures, re-exported here)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

from theorycraft import _arguments
from theorycraft._captures import (_activations, _data, _runnable, _score_settings, capture, checked_device,
                                   document_model, given, load_run, on_device, open_capture, run_activations, target_of)
from theorycraft._searching import search
from theorycraft.configs import CaptureConfig, FitConfig, ScoreConfig, document
from theorycraft.errors import ArgumentError, ArtifactError, FitError
from theorycraft.files import output_directory, write_atomically
from theorycraft.spec import Theory, load_theory, schemes_text
from theorycraft.store import ActivationSet
from theorycraft.targets import Target, as_target

if TYPE_CHECKING:
    from theorycraft.inference import FittedTheory
    from theorycraft.scoring import Scorecard

__all__ = ["Inferred", "capture", "check", "infer", "join", "load_run", "open_capture", "run_activations", "score_run",
           "score_shift", "search", "target_of"]


class Inferred(NamedTuple):
    """What ``infer`` returns: the fitted theory and its scorecard (fidelity on every split)."""

    fitted: "FittedTheory"
    scorecard: "Scorecard"


@document_model()
@document(FitConfig, "config", seed=None, max_steps=None, learning_rate=None, batch_size=None, fit_mode=None,
          max_memory=None, model_shards=None, restarts=None)
@document(CaptureConfig, "data", n=None, data_seed=None, dtype=None, seq_len=None, device=None)
def infer(theory: Theory | str, acts: ActivationSet | str | Path | None = None, *, config: FitConfig | None = None,
          data: CaptureConfig | None = None, out_dir=None, cache_dir=None, trust_code: bool = False, log=print,
          include_paths: Sequence[str] = (), texts: Iterable[str] | None = None, processes: int = 1,
          progress: bool | None = None, seed: int | None = None, max_steps: int | None = None,
          learning_rate: float | None = None, batch_size: int | None = None, fit_mode: str | None = None,
          max_memory: int | str | None = None, model_shards: int | None = None, n: int | None = None,
          data_seed: int | None = None, dtype: str | None = None, seq_len: int | None = None,
          restarts: int | None = None, target=None, dataset=None, output: str | None = None,
          device: str | None = None) -> Inferred:
    """Fit ``theory`` to its target's activations (captured first if the store lacks them) and
    score its fidelity.

    Parameters
    ----------
    theory : Theory or str
        The theory, or its file.
    acts : ActivationSet, str or Path, optional
        A capture to fit on (an ActivationSet, or its key or directory); default the capture that
        ``n``, ``data_seed``, ``dtype`` and ``texts`` name (reused if stored).
    config : FitConfig, optional
        How the theory is fitted (seed, Adam's steps, learning rate and batch size, stagewise or
        joint, memory bound, model shards: see ``theorycraft.configs.FitConfig``); default its defaults.
    data : CaptureConfig, optional
        The capture to fit on when ``acts`` is not given (reused if stored; see
        ``theorycraft.configs.CaptureConfig``); default its defaults. With ``n`` None, a stored
        capture of these sites at any size is reused.
    out_dir : str or Path, optional
        Where the fit is checkpointed (a rerun resumes) and saved as an artifact with its scorecard
        and ``metrics.jsonl``; default nowhere.
    cache_dir : str or Path, optional
        The activation store.
    trust_code : bool
        Let ``torch:`` targets and ``kind: module:attr`` components run their Python.
    log : callable, optional
        Called with each line of the fit's log.
    include_paths : sequence of str
        Directories the theory file's includes may read from, besides its own.
    texts : iterable of str, optional
        ``hf:`` targets: the texts to capture instead of the target's own data.
    processes : int
        Fit on N processes joined by ``jax.distributed``, each reading its own shards of the
        capture; without a cluster environment (THEORYCRAFT_COORDINATOR, ...) they are started
        here. In a process that has joined one (``join()``), every process fits and scores (the
        same numbers) and only process 0 writes.
    progress : bool, optional
        Progress bars on stderr; default ``config.progress``.
    {model}
    {config: FitConfig}
    {data: CaptureConfig}

    Returns
    -------
    Inferred
        ``(fitted, scorecard)``: the FittedTheory and its Scorecard (fidelity on every split), alike
        on every process.
    """
    from theorycraft.inference import engine as _distributed  # its cluster functions
    from theorycraft.inference import fit
    from theorycraft.scoring import score

    _arguments.check("processes", processes)
    config = FitConfig.of(config, seed=seed, max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size,
                          progress=progress, mode=fit_mode, max_memory=max_memory,
                          model_shards=model_shards, restarts=restarts)  # checked before anything loads
    data = _data(data, acts, texts, n=n, seed=data_seed, dtype=dtype, seq_len=seq_len, device=device)
    theory = (load_theory(str(theory), trust_code=trust_code, include_paths=include_paths)
              if isinstance(theory, (str, Path)) else theory)
    out = output_directory(out_dir) if out_dir is not None else None  # before the capture: a bad --out wastes nothing
    theory, made = given(theory, target, dataset, output)
    acts = _activations(theory, acts, data, texts=texts, cache_dir=cache_dir, trust_code=trust_code,
                        progress=config.progress, log=log, target=made)
    if processes > 1 and _distributed.cluster_from_environment() is None:  # start them here, on this machine
        return _infer_on_processes(processes, dict(theory=theory, acts=acts, out_dir=out, config=config,
                                                   progress=config.progress, trust_code=trust_code), log)
    if processes > 1 and processes != _distributed.process_count():
        raise ArgumentError(f"processes={processes}, but the cluster this process joined has "
                            f"{_distributed.process_count()} (THEORYCRAFT_NUM_PROCESSES)")
    fitted = fit(theory, acts, config, out_dir=out, log=log)
    card = score(fitted, acts, bits=False)  # every process scores its own shards; the sums are shared
    if out is not None and _distributed.is_leader():  # process 0 writes
        fitted.save(out)
        card.save(out)
    return Inferred(fitted, card)


def _infer_on_processes(processes: int, job: dict, log) -> Inferred:
    """``infer`` on local workers (theorycraft._processes); the result is read from the artifact
    process 0 writes (to a temporary folder without ``out_dir``)."""
    import tempfile

    from theorycraft._processes import spawn
    from theorycraft.inference import FittedTheory
    from theorycraft.scoring import Scorecard

    with tempfile.TemporaryDirectory(prefix="theorycraft-infer-") as folder:
        out = job["out_dir"] = Path(job["out_dir"] or folder)
        spawn(processes, job, log)
        return Inferred(FittedTheory.load(out, trust_code=job["trust_code"]), Scorecard.load(out))


def join(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> None:
    """Join a cluster of processes (JAX's distributed runtime; gloo collectives on CPU) before
    anything else uses JAX; what is not given is read from THEORYCRAFT_COORDINATOR,
    THEORYCRAFT_NUM_PROCESSES and THEORYCRAFT_PROCESS_ID (or SLURM_NTASKS, SLURM_PROCID). Then
    ``infer`` runs on every process of it, each reading its own shards.

    Parameters
    ----------
    coordinator : str, optional
        ``host:port`` of process 0's coordinator; default from the environment.
    num_processes : int, optional
        How many processes join; default from the environment.
    process_id : int, optional
        This process's index, from 0; default from the environment.

    Returns
    -------
    None
        Nothing: this process has joined, and JAX sees every process's devices.
    """
    import os

    from theorycraft.inference import engine as _distributed  # its cluster functions

    env = dict(os.environ)
    for name, value in ((_distributed.COORDINATOR, coordinator), (_distributed.NUM_PROCESSES, num_processes),
                        (_distributed.PROCESS_ID, process_id)):
        if value is not None:
            env[name] = str(value)
    cluster = _distributed.cluster_from_environment(env)
    if cluster is None:
        raise ArgumentError(f"expected a coordinator address (host:port) to join, as coordinator= or in "
                            f"{_distributed.COORDINATOR}; found neither")
    _distributed.initialize(cluster)


@document_model()
@document(CaptureConfig, None, device=None)
def check(theory: Theory | str, *, run_dir=None, n: int | None = None, limit: int | None = None,
          seed: int | None = None, cache_dir=None, trust_code: bool = False, log=print,
          max_memory: int | str | None = None, include_paths: Sequence[str] = (), data_seed: int | None = None,
          seq_len: int | None = None, target=None, dataset=None, output: str | None = None,
          device: str | None = None) -> list:
    """Check every axiom of ``theory`` on held-out (test) examples: the network intervened on with
    torch hooks, the theory run free under the same intervention. Writes ``axioms.json`` into the
    run directory.

    Parameters
    ----------
    theory : Theory or str
        The theory (with an ``axioms:`` section), or its file.
    run_dir : str or Path, optional
        A fit of the same theory (axioms and docs aside); default a new fit into runs/THEORY_NAME.
    n : int, optional
        Examples to capture for a new fit; default the target's dataset.
    limit : int, optional
        Held-out examples to check on; default 512.
    seed : int, optional
        Seed of the fit and of the resampling; default a FitConfig's.
    cache_dir : str or Path, optional
        The activation store.
    trust_code : bool
        Let ``torch:`` targets and ``kind: module:attr`` components run their Python.
    log : callable, optional
        Called with each line of progress.
    max_memory : int or str, optional
        Refuse a fit that would need more memory than this.
    include_paths : sequence of str
        Directories the theory file's includes may read from, besides its own.
    data_seed : int, optional
        Seed of a new fit's data (which examples, and so the test split); default a CaptureConfig's.
    seq_len : int, optional
        Tokens per window of a new fit's capture, for an ``hf:`` target; default 128, or the
        model's positions if fewer.
    {model}
    {CaptureConfig}

    Returns
    -------
    list of AxiomResult
        One per axiom: the network's effect with its interval, the theory's, and the verdict.
    """
    import dataclasses
    import json

    from theorycraft import _artifact
    from theorycraft.scoring import Lab, check_axioms
    from theorycraft.scoring import CHECK_EXAMPLES, TRAIN_EXAMPLES

    limit = _arguments.check("limit", limit, optional=True) or CHECK_EXAMPLES
    config = FitConfig.of(seed=seed, max_memory=max_memory, progress=False)
    data = CaptureConfig.of(n=n, seed=data_seed, seq_len=seq_len, device=device)  # the device: of the axioms too
    if (n is not None or seq_len is not None or data_seed is not None or max_memory is not None) and run_dir is not None:
        raise ArgumentError("{n}, {data_seed}, {seq_len} and {max_memory} are of a new fit; with {run_dir} the run's "
                            "own capture is used, and its fit", params=("n", "data_seed", "seq_len", "max_memory", "run_dir"))
    theory = (load_theory(str(theory), trust_code=trust_code, include_paths=include_paths)
              if isinstance(theory, (str, Path)) else theory)
    if not theory.axioms:
        raise FitError(f"theory '{theory.name}' states no axioms (add an 'axioms:' section; see spec/README.md)")
    checked_device(data.device)
    theory, made = given(theory, target, dataset, output)
    target = on_device(made or target_of(theory, trust_code=trust_code, seq_len=data.seq_len), data.device)
    if not hasattr(target, "intervene"):  # said before anything is fitted
        raise FitError(f"axioms intervene on the network, and {target.name} is a recording: point the theory at "
                       f"a runnable target ({schemes_text(_runnable(), bare=True)})")
    if run_dir is None:
        run_dir = Path("runs") / theory.name
        log(f"fitting {theory.name} into {run_dir} (pass --run RUN_DIR to check an existing fit)")
        fitted = infer(theory, config=config, data=data, out_dir=run_dir, cache_dir=cache_dir, trust_code=trust_code,
                       log=lambda m: None, target=made).fitted
    else:
        fitted = load_run(run_dir, trust_code=trust_code)
        if _structure(fitted.theory) != _structure(theory):
            raise FitError(f"{run_dir} holds a fit of a different theory than {theory.name}'s file (its sites, "
                           f"variables or components differ); fit this one: theorycraft infer THEORY.yaml --out {run_dir}")
    fitted = fitted.with_theory(theory)  # the file's axioms, the run's parameters
    acts = run_activations(fitted, Path(run_dir), cache_dir)
    inputs = acts.inputs()
    lab = Lab(fitted, target, inputs[acts.split("test")[:limit]], inputs[acts.split("train")[:TRAIN_EXAMPLES]],
              seed=config.seed)
    results = check_axioms(lab)
    path = Path(run_dir) / "axioms.json"
    write_atomically(path, json.dumps({"theory": theory.name, "target": str(theory.target),
                                       "axioms": [dataclasses.asdict(r) for r in results]}, indent=1) + "\n")
    _artifact.record(run_dir, path.name)
    return results


def _structure(theory: Theory) -> dict:
    """What a fit depends on: the theory without its name, description, docs and axioms."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "doc"}
        return [strip(v) for v in node] if isinstance(node, list) else node
    data = theory.to_dict() | {"target": f"{theory.target.scheme}:{theory.target.located}"}  # wherever written
    return strip({k: v for k, v in data.items() if k not in ("theory", "description", "axioms")})


@document_model("target", "output")
@document(ScoreConfig, "config", prequential=None, splice=None, limit=None, shift=None, n=None, max_memory=None,
          data_seed=None, dtype=None, device=None)
def score_run(run_dir, *, config: ScoreConfig | None = None, trust_code: bool = False, cache_dir=None,
              acts: ActivationSet | str | Path | None = None, texts: Iterable[str] | None = None, log=print,
              target=None, output: str | None = None, prequential: bool | None = None, splice: bool | None = None,
              limit: int | None = None, shift: str | None = None, n: int | None = None,
              max_memory: int | str | None = None, data_seed: int | None = None, dtype: str | None = None,
              device: str | None = None) -> "Scorecard":
    """Score the artifact in ``run_dir`` and write the result into its scorecard.json.

    Parameters
    ----------
    run_dir : str or Path
        An artifact directory written by ``infer``.
    config : ScoreConfig, optional
        What to add (prequential code, splices), on how many examples, and a shift to score on
        too (``shift``, ``n``, ``data_seed``, ``dtype``: earlier shifts' entries are kept); see
        ``theorycraft.configs.ScoreConfig``. Default its defaults.
    trust_code : bool
        Let ``torch:`` targets and ``kind: module:attr`` components run their Python.
    cache_dir : str or Path, optional
        The activation store to look the run's capture up in first.
    acts : ActivationSet, str or Path, optional
        The capture (or its key or directory) to score on instead of the run's own.
    texts : iterable of str, optional
        ``hf:`` targets: score on this text too, entered as ``shift`` (default "text"), in windows
        as long as the run's.
    log : callable, optional
        Told what the earlier scorecard held that this score keeps (splice, counterfactual
        fidelity, the prequential code: whatever this score does not measure again).
    {model}
    {config: ScoreConfig}

    Returns
    -------
    Scorecard
        The scorecard, as written: this score's figures, with the earlier ones it did not
        measure again.
    """
    from theorycraft.scoring import Scorecard, score

    config = ScoreConfig.of(config, prequential=prequential, splice=splice, limit=limit, shift=shift, n=n,
                            max_memory=max_memory, data_seed=data_seed, dtype=dtype, device=device)
    texts = tuple(texts) if texts else None
    shift = config.shift or ("text" if texts else None)
    _score_settings(config, shift)  # a setting that would do nothing is refused, not dropped
    run_dir = Path(run_dir)
    fitted = load_run(run_dir, trust_code=trust_code)
    acts = run_activations(fitted, run_dir, cache_dir, acts)
    target = as_target(target, dataset=acts.inputs(), output=output) if target is not None else None
    ref = fitted.theory.target
    runnable = ref is not None and ref.scheme in {s.name for s in _runnable()}
    if target is None and (config.splice or (shift and not texts)) and runnable:
        target = target_of(fitted.theory, trust_code=trust_code)
    target = on_device(target, checked_device(config.device)) if target is not None else None
    try:  # what was scored before is kept where this score does not measure it again
        earlier = Scorecard.load(run_dir)
    except ArtifactError:  # a card this version cannot read holds nothing to keep
        earlier = None
    shifted = dict(earlier.shifted) if earlier is not None else {}
    if shift is not None:
        shifted[shift] = score_shift(fitted, acts, shift, target=target, n=config.n, trust_code=trust_code,
                                     texts=texts, data_seed=config.data_seed, dtype=config.dtype, splice=config.splice)
    card = score(fitted, acts, target=target if config.splice else None, prequential=config.prequential,
                 limit=config.limit, max_memory=config.max_memory)
    card, kept = _keep_earlier(card.replace(shifted=shifted), earlier)
    if kept:
        log(f"kept from the earlier score of {run_dir}: {', '.join(kept)} (not measured this time; a score that "
            f"measures them again replaces them)")
    card.save(run_dir)
    return card


def _keep_earlier(card: "Scorecard", earlier: "Scorecard | None") -> tuple["Scorecard", list[str]]:
    """``card`` with what ``earlier`` (the run's scorecard before this score) measured and this
    score did not: splice and counterfactual fidelity, the prequential code. Fidelity, size and
    MDL are always measured again, so they replace the earlier ones."""
    import dataclasses

    kept: list[str] = []
    if earlier is None:
        return card, kept
    if not card.splice and earlier.splice:
        card, kept = card.replace(splice=earlier.splice), kept + ["splice"]
    if card.counterfactual is None and earlier.counterfactual is not None:
        card, kept = card.replace(counterfactual=earlier.counterfactual), kept + ["counterfactual fidelity"]
    old, new = earlier.mdl, card.mdl
    if new is not None and old is not None and new.prequential_bits is None and old.prequential_bits is not None:
        online = {f: getattr(old, f) for f in ("prequential_bits", "prequential_baseline_bits",
                                              "prequential_compression", "prequential_blocks")}
        card, kept = card.replace(mdl=dataclasses.replace(new, **online)), kept + ["prequential code"]
    return card, kept


def score_shift(fitted: "FittedTheory", acts: ActivationSet, shift: str, *, target: Target | None = None,
                n: int | None = None, trust_code: bool = False, progress: bool = True,
                texts: Iterable[str] | None = None, data_seed: int | None = None, dtype: str | None = None,
                splice: bool = False):
    """The coverage of ``fitted`` (fitted on ``acts``) on the named shift of its target, or (with
    ``texts``, an hf: target) on that text, entered under ``shift``: its sites captured there
    (``n`` examples, default ``acts.n``; data seed and dtype default to ``acts``'s; ``texts`` cut into
    windows as long as ``acts``'s; same store), scored by the one scorer on that capture's test
    examples the fit never saw (a ``ShiftScore``); with ``splice`` (and a ``target``), splice
    fidelity there too."""
    from theorycraft.scoring import score_shifted

    texts = tuple(texts) if texts else None
    # windows as long as the fit's: sites are scored per position against the fit's train mean
    seq_len = int(acts.inputs().shape[1]) if texts else None
    source = fitted.theory if texts or target is None else target
    shifted = capture(source, None if isinstance(source, Theory) else [s.hook for s in fitted.theory.sites.values()],
                      n=n or acts.n, seed=acts.manifest["dataset"]["seed"] if data_seed is None else data_seed,
                      dtype=dtype or acts.manifest["dtype"], cache_dir=acts.directory.parent, progress=progress,
                      shift=None if texts else shift, texts=texts, trust_code=trust_code, seq_len=seq_len)
    return score_shifted(fitted, shifted, acts, target if splice else None)
