"""The library's front: parse -> capture -> infer -> score, one small function each."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

from theorycraft import _arguments
from theorycraft._metrics import Metrics
from theorycraft.configs import CaptureConfig, FitConfig, ScoreConfig, SearchConfig
from theorycraft.errors import ArgumentError, ArtifactError, FitError
from theorycraft.spec import SCHEMES, HookPoint, Theory, load_theory, schemes_text
from theorycraft.store import ActivationSet, Request, Store, cache_root
from theorycraft.targets import Target, load_target, source_identity

if TYPE_CHECKING:
    from theorycraft.inference import FittedTheory
    from theorycraft.refine import SearchResult
    from theorycraft.scoring import Scorecard


def target_of(theory_or_target: Theory | Target | str, *, trust_code: bool = False, texts=None,
              seq_len: int | None = None) -> Target:
    if isinstance(theory_or_target, Target):
        return theory_or_target
    ref = theory_or_target.target if isinstance(theory_or_target, Theory) else theory_or_target
    if texts is not None or seq_len is not None:
        scheme = str(ref).partition(":")[0]
        if not (scheme in SCHEMES and SCHEMES[scheme].texts):
            what = "{texts} are the data" if texts is not None else "{seq_len} sets the windows"
            raise ArgumentError(f"{what} of {schemes_text(_texts_schemes(), bare=True)} targets; {ref} brings its own",
                                params=("texts", "seq_len"))
        from theorycraft.targets._hf import load_hf_model
        return load_hf_model(str(ref).split(":", 1)[1], texts=texts, seq_len=seq_len)
    return load_target(ref, trust_code=trust_code)


def _texts_schemes():
    return [s for s in SCHEMES.values() if s.texts]


def _runnable():
    return [s for s in SCHEMES.values() if s.runnable]


def _request(source, hooks, config: CaptureConfig, texts) -> Request | None:
    """What the store's index knows a capture by, before any target loads (None for a loaded
    target, or one only running it can identify)."""
    if isinstance(source, Target):
        return None
    ref = source.target if isinstance(source, Theory) else source
    identity = source_identity(ref, texts, config.seq_len)
    if identity is None:
        return None
    return Request(identity, tuple(sorted({str(h) for h in hooks})), config.n, config.seed, config.dtype,
                          config.shift)


def capture(theory_or_target: Theory | Target | str, sites: Sequence[str | HookPoint] | None = None, *,
            config: CaptureConfig | None = None, cache_dir=None, trust_code: bool = False,
            texts: Iterable[str] | None = None, progress: bool = True, include_paths: Sequence[str] = (),
            log=None, part: tuple[int, int] | None = None, n: int | None = None, seed: int | None = None,
            dtype: str | None = None, batch_size: int | None = None, shift: str | None = None,
            seq_len: int | None = None) -> ActivationSet | Path:
    """Record a theory's sites (or ``sites`` of a target) into the store; reuse a capture of the
    same (target, sites, data) if there is one. A capture the store's index knows is opened
    without loading the target.

    Parameters
    ----------
    theory_or_target : Theory, Target or str
        A theory (or a theory file, ``.yaml``) whose sites to record, or a target (or a reference
        like ``builtin:induction``) with ``sites``.
    sites : sequence of str or HookPoint, optional
        Hook points to record; default the theory's (a target needs them).
    config : CaptureConfig, optional
        Which examples and how they are stored (``n``, ``seed``, ``dtype``, ``batch_size``,
        ``seq_len``, ``shift``: see ``theorycraft.configs.CaptureConfig``); default its defaults.
        With ``n`` None, a stored capture of these sites at another size is reused, and ``log``
        says which.
    cache_dir : str or Path, optional
        The activation store; default ``$THEORYCRAFT_CACHE`` or the user cache directory.
    trust_code : bool
        Let ``torch:`` targets run their Python.
    texts : iterable of str, optional
        ``hf:`` targets: the texts to run instead of the target's own data.
    progress : bool
        A progress bar on stderr.
    include_paths : sequence of str
        Directories a theory file's includes may read from, besides its own.
    log : callable, optional
        Called with one message when another stored capture is reused; default silent.
    part : (int, int), optional
        ``(K, N)``: only every N-th shard from the K-th (K from 0), into a partial store; a capture
        of the same key without ``part`` (or ``infer``) merges the parts it finds and records only
        what they lack.
    n, seed, dtype, batch_size, shift, seq_len
        Each, where not None, replaces that field of ``config``.

    Returns
    -------
    ActivationSet or Path
        The capture, on disk in the store; with ``part``, the partial store's directory.
    """
    config = CaptureConfig.of(config, n=n, seed=seed, dtype=dtype, batch_size=batch_size, shift=shift,
                              seq_len=seq_len)
    if sites is not None:
        sites = [_arguments.site(s) for s in sites]  # checked before any target loads
    if isinstance(theory_or_target, str) and theory_or_target.endswith((".yaml", ".yml")):
        theory_or_target = load_theory(theory_or_target, include_paths=include_paths)
    if sites is None and not isinstance(theory_or_target, Theory):  # said before any target loads
        name = getattr(theory_or_target, "name", theory_or_target)
        raise ArgumentError(f"name the sites to capture from {name} (--sites, or sites=[...] in Python; "
                            f"theorycraft sites {name} lists them), or capture a theory file")
    texts = tuple(texts) if texts else None
    hooks = [site.hook for site in theory_or_target.sites.values()] if sites is None else sites
    store, request = Store(cache_dir), None if part else _request(theory_or_target, hooks, config, texts)
    if request is not None and (acts := store.reuse(request, log or (lambda message: None))) is not None:
        return acts
    target = target_of(theory_or_target, trust_code=trust_code, texts=texts, seq_len=config.seq_len)
    return store.capture(target, hooks, config, request=request, progress=progress, part=part)


def open_capture(capture: ActivationSet | str | Path, theory: Theory | None = None, cache_dir=None) -> ActivationSet:
    """A capture named by key (or a unique prefix) in the store, or by its directory; with
    ``theory``, checked to hold every site it names."""
    acts = capture if isinstance(capture, ActivationSet) else Store(cache_dir).find(capture)
    if theory is not None:
        missing = sorted({str(s.hook) for s in theory.sites.values()} - set(acts.sites))
        if missing:
            raise ArgumentError(f"capture {acts.key} ({acts.directory}) lacks site(s) {', '.join(missing)} of theory "
                                f"'{theory.name}'; it holds: {', '.join(acts.sites)}")
    return acts


class Inferred(NamedTuple):
    """What ``infer`` returns: the fitted theory and its scorecard (fidelity on every split)."""

    fitted: "FittedTheory"
    scorecard: "Scorecard"


def infer(theory: Theory | str, acts: ActivationSet | str | Path | None = None, *, config: FitConfig | None = None,
          data: CaptureConfig | None = None, out_dir=None, cache_dir=None, trust_code: bool = False, log=print,
          include_paths: Sequence[str] = (), texts: Iterable[str] | None = None, processes: int = 1,
          progress: bool | None = None, seed: int | None = None, max_steps: int | None = None,
          learning_rate: float | None = None, batch_size: int | None = None, fit_mode: str | None = None,
          max_memory: int | str | None = None, model_shards: int | None = None, n: int | None = None,
          data_seed: int | None = None, dtype: str | None = None, seq_len: int | None = None) -> Inferred:
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
    seed, max_steps, learning_rate, batch_size, fit_mode, max_memory, model_shards
        Each, where not None, replaces that field of ``config`` (``fit_mode``: its ``mode``).
    n, data_seed, dtype, seq_len
        Each, where not None, replaces that field of ``data`` (``data_seed``: its ``seed``).

    Returns
    -------
    Inferred
        ``(fitted, scorecard)``: the FittedTheory and its Scorecard (fidelity on every split), alike
        on every process.
    """
    from theorycraft.inference import _distributed, fit
    from theorycraft.scoring import score

    _arguments.check("processes", processes)
    config = FitConfig.of(config, seed=seed, max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size,
                          progress=progress, mode=fit_mode, max_memory=max_memory,
                          model_shards=model_shards)  # checked before anything loads
    data = _data(data, acts, texts, n=n, seed=data_seed, dtype=dtype, seq_len=seq_len)
    theory = (load_theory(str(theory), trust_code=trust_code, include_paths=include_paths)
              if isinstance(theory, (str, Path)) else theory)
    acts = _activations(theory, acts, data, texts=texts, cache_dir=cache_dir, trust_code=trust_code,
                        progress=config.progress, log=log)
    out = Path(out_dir) if out_dir is not None else None
    if processes > 1 and _distributed.cluster_from_environment() is None:  # start them here, on this machine
        return _infer_on_processes(processes, dict(theory=theory, acts=acts, out_dir=out, config=config,
                                                   progress=config.progress, trust_code=trust_code), log)
    if processes > 1 and processes != _distributed.process_count():
        raise ArgumentError(f"processes={processes}, but the cluster this process joined has "
                            f"{_distributed.process_count()} (THEORYCRAFT_NUM_PROCESSES)")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    fitted = fit(theory, acts, config, out_dir=out, log=log)
    card = score(fitted, acts, bits=False)  # every process scores its own shards; the sums are shared
    if out is not None and _distributed.is_leader():  # process 0 writes
        fitted.save(out)
        card.save(out)
    return Inferred(fitted, card)


def _data(data: CaptureConfig | None, acts, texts, **given) -> CaptureConfig | None:
    """The capture config of a command that fits (``data`` with the ``given`` fields), or None
    with a named capture ``acts``, which is its own data: then none of them may be given."""
    if acts is None:
        return CaptureConfig.of(data, **given)
    named = [name for name, value in {"data": data, "texts": texts or None, **given}.items() if value is not None]
    if named:
        names = ["data_seed" if n == "seed" else n for n in named]
        raise ArgumentError(f"a named capture ({{acts}}) is its own data: leave out "
                            f"{', '.join('{' + n + '}' for n in names)}", params=("acts", *names))
    return None


def _activations(theory: Theory, acts, data: CaptureConfig | None, *, texts, cache_dir, trust_code, progress, log):
    """The capture a command fits on: ``acts`` if named, else the one ``data`` names (captured
    if the store lacks it)."""
    if acts is not None:
        return open_capture(acts, theory, cache_dir)
    return capture(theory, config=data, texts=texts, cache_dir=cache_dir, trust_code=trust_code, progress=progress,
                   log=log)


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

    from theorycraft.inference import _distributed

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


def search(start: Theory | str, *, vocabulary: str | None = None, config: SearchConfig | None = None,
           fit: FitConfig | None = None, data: CaptureConfig | None = None, out_dir=None, compare: str | None = None,
           cache_dir=None, trust_code: bool = False, log=print, include_paths: Sequence[str] = (),
           progress: bool = True, acts: ActivationSet | str | Path | None = None, texts: Iterable[str] | None = None,
           budget_bits: float | None = None, budget_minutes: float | None = None, tries: int | None = None,
           target_coverage: float | None = None, judge_cache: int | str | None = None, seed: int | None = None,
           max_steps: int | None = None, learning_rate: float | None = None, batch_size: int | None = None,
           max_memory: int | str | None = None, n: int | None = None, data_seed: int | None = None,
           dtype: str | None = None, seq_len: int | None = None) -> "SearchResult":
    """Grow and prune a theory from ``start`` by held-out MDL, with candidates from ``vocabulary``.

    Parameters
    ----------
    start : Theory or str
        The theory to start from (its sites; components optional), or its file.
    vocabulary : str, optional
        A vocabulary YAML file of candidate components; default generated for the target's sites.
    config : SearchConfig, optional
        Budgets, tries per step, the scaling curve's target coverage, the judge's cache (see
        ``theorycraft.configs.SearchConfig``); default its defaults.
    fit : FitConfig, optional
        How each candidate (and the found theory) is fitted: seed, Adam's steps, learning rate and
        batch size, mode, memory bound; without its progress bars. Default its defaults.
    data : CaptureConfig, optional
        The capture to search on when ``acts`` is not given, as for ``infer``.
    out_dir : str or Path, optional
        Where the found theory, the trail, its plot, ``metrics.jsonl`` and the fitted artifact go;
        default ``runs/search-THEORY_NAME``.
    compare : str, optional
        A theory file over the same sites, judged the same way, for reference.
    cache_dir : str or Path, optional
        The activation store.
    trust_code : bool
        Let ``torch:`` targets and ``kind: module:attr`` components run their Python.
    log : callable, optional
        Called with each line of the search's log.
    include_paths : sequence of str
        Directories the theory files' includes may read from, besides their own.
    progress : bool
        A bar over the steps (and one over the captures) on stderr.
    acts : ActivationSet, str or Path, optional
        A capture to search on (or its key or directory), as for ``infer``.
    texts : iterable of str, optional
        ``hf:`` targets: the texts to capture instead of the target's own data.
    budget_bits, budget_minutes, tries, target_coverage, judge_cache
        Each, where not None, replaces that field of ``config``.
    seed, max_steps, learning_rate, batch_size, max_memory
        Each, where not None, replaces that field of ``fit``.
    n, data_seed, dtype, seq_len
        Each, where not None, replaces that field of ``data`` (``data_seed``: its ``seed``).

    Returns
    -------
    SearchResult
        The trail, the final theory's totals, its refitted scorecard, the scaling curve and the
        comparison, with ``out`` the directory written.
    """
    from theorycraft.inference._fit import site_shapes
    from theorycraft.refine import (Judge, default_vocabulary, explained_sites, load_vocabulary, parse_vocabulary,
                                    search as run, write_search)

    config = SearchConfig.of(config, budget_bits=budget_bits, budget_minutes=budget_minutes, tries=tries,
                             target_coverage=target_coverage, judge_cache=judge_cache)
    fit = FitConfig.of(fit, seed=seed, max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size,
                       max_memory=max_memory, progress=False)  # one bar, over the search's steps
    data = _data(data, acts, texts, n=n, seed=data_seed, dtype=dtype, seq_len=seq_len)
    path = start if isinstance(start, str) else "<theory>"
    theory = load_theory(start, trust_code=trust_code, include_paths=include_paths) if isinstance(start, str) else start
    acts = _activations(theory, acts, data, texts=texts, cache_dir=cache_dir, trust_code=trust_code,
                        progress=progress, log=log)
    if vocabulary:
        vocab = load_vocabulary(vocabulary, theory, trust_code=trust_code)
    else:
        _vocabulary_known(theory, acts)
        text = default_vocabulary(theory, site_shapes(theory, acts.sites), acts.inputs())
        vocab = parse_vocabulary(text, "<default vocabulary>", theory)
    judge = Judge(theory, acts, explained_sites(theory, vocab), fit, cache_bytes=config.judge_cache)
    out = Path(out_dir or Path("runs") / f"search-{theory.name}")
    result = run(theory, acts, vocab, judge=judge, budget_bits=config.budget_bits,
                 budget_seconds=config.budget_minutes * 60 if config.budget_minutes else None, tries=config.tries,
                 log=log, progress=progress, metrics=Metrics(out))
    reference = None
    if compare:
        judged = judge.assess(_same_sites(load_theory(compare, trust_code=trust_code, include_paths=include_paths), theory, compare))
        reference = {"theory": compare, "validation": judged.selection, "test": judged.report, "params": judged.params}
    return write_search(result, judge, out, start_path=path, target_coverage=config.target_coverage,
                        config=fit, reference=reference)



def _vocabulary_known(theory: Theory, acts: ActivationSet) -> None:
    """The default search vocabulary has tables of the input's tokens, sized by the target's
    vocabulary: a token target that declares none is refused before any fit, saying how to declare it."""
    import numpy as np

    if acts.vocab_size is None and np.issubdtype(acts.inputs().dtype, np.integer):
        raise FitError(f"{theory.target} declares no vocabulary, and the default search vocabulary has tables of its "
                       f"tokens: return theorycraft.targets.UserModel(module, dataset_fn, vocab_size=V) from the "
                       f"factory (V token ids), or pass --vocabulary VOCAB.yaml with a size on each lookup")


def _same_sites(theory: Theory, start: Theory, path: str) -> Theory:
    from theorycraft.errors import FitError

    if theory.target != start.target or any(start.sites.get(n) != s for n, s in theory.sites.items()):
        raise FitError(f"{path}: a theory to compare with must have the start's target and sites "
                       f"({start.target}: {', '.join(start.sites)})")
    return theory


def run_activations(fitted: "FittedTheory", run_dir: Path, cache_dir=None,
                    acts: ActivationSet | str | Path | None = None) -> ActivationSet:
    """The capture a fitted theory was fitted on: named by key in its fit record, looked up in the
    store (``cache_dir``, else $THEORYCRAFT_CACHE, else the user cache), then in the store it was
    fitted from; or ``acts`` (a capture, its key or directory) when given."""
    if acts is not None:
        return open_capture(acts, fitted.theory, cache_dir)
    data = fitted.fit_info.get("data", {})
    key, directory = data.get("capture"), data.get("directory")  # "directory": written before captures had keys
    if not key and not directory:
        raise FitError(f"{run_dir} does not say which activations it was fitted on; rerun theorycraft infer")
    places = [cache_root(cache_dir) / key, Path(data.get("cache", "")) / key] if key else [Path(directory)]
    for place in places:
        if (place / "manifest.json").exists():
            return ActivationSet(place)
    raise FitError(f"the capture {run_dir} was fitted on ({key or directory}) is not in "
                   f"{' nor '.join(str(p.parent) for p in places)}; name the store that holds it (--cache DIR) or "
                   f"the capture (--capture KEY|DIR), or rerun theorycraft infer")


def load_run(run_dir, *, trust_code: bool = False) -> "FittedTheory":
    """The fitted theory of an artifact directory, every file of it (the scorecard too) verified
    against its recorded checksum first."""
    from theorycraft import _artifact
    from theorycraft.inference import FittedTheory

    _artifact.verify(run_dir)
    return FittedTheory.load(run_dir, trust_code=trust_code)


def check(theory: Theory | str, *, run_dir=None, n: int | None = None, limit: int | None = None,
          seed: int | None = None, cache_dir=None, trust_code: bool = False, log=print,
          max_memory: int | str | None = None, include_paths: Sequence[str] = (), data_seed: int | None = None,
          seq_len: int | None = None) -> list:
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

    Returns
    -------
    list of AxiomResult
        One per axiom: the network's effect with its interval, the theory's, and the verdict.
    """
    import dataclasses
    import json

    from theorycraft import _artifact
    from theorycraft.scoring import Lab, check_axioms
    from theorycraft.scoring._axioms import CHECK_EXAMPLES, TRAIN_EXAMPLES

    limit = _arguments.check("limit", limit, optional=True) or CHECK_EXAMPLES
    config = FitConfig.of(seed=seed, max_memory=max_memory, progress=False)
    data = CaptureConfig.of(n=n, seed=data_seed, seq_len=seq_len)
    if (n is not None or seq_len is not None or data_seed is not None) and run_dir is not None:
        raise ArgumentError("{n}, {data_seed} and {seq_len} set the data of a new fit; with {run_dir} the run's own "
                            "capture is used", params=("n", "data_seed", "seq_len", "run_dir"))
    theory = (load_theory(str(theory), trust_code=trust_code, include_paths=include_paths)
              if isinstance(theory, (str, Path)) else theory)
    if not theory.axioms:
        raise FitError(f"theory '{theory.name}' states no axioms (add an 'axioms:' section; see spec/README.md)")
    target = target_of(theory, trust_code=trust_code, seq_len=data.seq_len)
    if not hasattr(target, "intervene"):  # said before anything is fitted
        raise FitError(f"axioms intervene on the network, and {target.name} is a recording: point the theory at "
                       f"a runnable target ({schemes_text(_runnable(), bare=True)})")
    if run_dir is None:
        run_dir = Path("runs") / theory.name
        log(f"fitting {theory.name} into {run_dir} (pass --run RUN_DIR to check an existing fit)")
        fitted = infer(theory, config=config, data=data, out_dir=run_dir, cache_dir=cache_dir, trust_code=trust_code,
                       log=lambda m: None).fitted
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
    path.write_text(json.dumps({"theory": theory.name, "target": str(theory.target),
                                "axioms": [dataclasses.asdict(r) for r in results]}, indent=1) + "\n")
    _artifact.record(run_dir, path.name)
    return results


def _structure(theory: Theory) -> dict:
    """What a fit depends on: the theory without its name, description, docs and axioms."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "doc"}
        return [strip(v) for v in node] if isinstance(node, list) else node
    data = theory.to_dict()
    return strip({k: v for k, v in data.items() if k not in ("theory", "description", "axioms")})


def score_run(run_dir, *, config: ScoreConfig | None = None, trust_code: bool = False, cache_dir=None,
              acts: ActivationSet | str | Path | None = None, texts: Iterable[str] | None = None,
              prequential: bool | None = None, splice: bool | None = None, limit: int | None = None,
              shift: str | None = None, n: int | None = None, max_memory: int | str | None = None,
              data_seed: int | None = None, dtype: str | None = None) -> "Scorecard":
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
    prequential, splice, limit, shift, n, max_memory, data_seed, dtype
        Each, where not None, replaces that field of ``config``.

    Returns
    -------
    Scorecard
        The scorecard, as written.
    """
    from theorycraft.scoring import Scorecard, score

    config = ScoreConfig.of(config, prequential=prequential, splice=splice, limit=limit, shift=shift, n=n,
                            max_memory=max_memory, data_seed=data_seed, dtype=dtype)
    texts = tuple(texts) if texts else None
    shift = config.shift or ("text" if texts else None)
    if shift is None and (config.n is not None or config.data_seed is not None or config.dtype is not None):
        raise ArgumentError("{n}, the data seed ({data_seed}) and {dtype} size the shifted capture: give a shift too "
                            "({shift} NAME, or {texts}), or leave them out",
                            params=("n", "data_seed", "dtype", "shift", "texts"))
    run_dir = Path(run_dir)
    fitted = load_run(run_dir, trust_code=trust_code)
    acts = run_activations(fitted, run_dir, cache_dir, acts)
    target = None
    if (config.splice or (shift and not texts)) and SCHEMES[fitted.theory.target.scheme].runnable:
        target = target_of(fitted.theory, trust_code=trust_code)
    try:  # the shifts scored before are kept (a card this version cannot read holds none to keep)
        shifted = dict(Scorecard.load(run_dir).shifted)
    except ArtifactError:
        shifted = {}
    if shift is not None:
        shifted[shift] = score_shift(fitted, acts, shift, target=target, n=config.n, trust_code=trust_code,
                                     texts=texts, data_seed=config.data_seed, dtype=config.dtype)
    card = score(fitted, acts, target=target if config.splice else None, prequential=config.prequential,
                 limit=config.limit, max_memory=config.max_memory)
    card = card.replace(shifted=shifted)
    card.save(run_dir)
    return card


def score_shift(fitted: "FittedTheory", acts: ActivationSet, shift: str, *, target: Target | None = None,
                n: int | None = None, trust_code: bool = False, progress: bool = True,
                texts: Iterable[str] | None = None, data_seed: int | None = None, dtype: str | None = None):
    """The coverage of ``fitted`` (fitted on ``acts``) on the named shift of its target, or (with
    ``texts``, an hf: target) on that text, entered under ``shift``: its sites captured there
    (``n`` examples, default ``acts.n``; data seed and dtype default to ``acts``'s; ``texts`` cut into
    windows as long as ``acts``'s; same store), scored by the one scorer on that capture's test
    examples the fit never saw (a ``ShiftScore``)."""
    from theorycraft.scoring import score_shifted

    texts = tuple(texts) if texts else None
    # windows as long as the fit's: sites are scored per position against the fit's train mean
    seq_len = int(acts.inputs().shape[1]) if texts else None
    source = fitted.theory if texts or target is None else target
    shifted = capture(source, None if isinstance(source, Theory) else [s.hook for s in fitted.theory.sites.values()],
                      n=n or acts.n, seed=acts.manifest["dataset"]["seed"] if data_seed is None else data_seed,
                      dtype=dtype or acts.manifest["dtype"], cache_dir=acts.directory.parent, progress=progress,
                      shift=None if texts else shift, texts=texts, trust_code=trust_code, seq_len=seq_len)
    return score_shifted(fitted, shifted, acts)
