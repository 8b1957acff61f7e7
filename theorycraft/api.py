"""The library's front: parse -> capture -> infer -> score, one small function each."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

from theorycraft import _arguments, _cache
from theorycraft.files import output_directory, write_atomically
from theorycraft._metrics import Metrics
from theorycraft.errors import ArgumentError, ArtifactError, FitError
from theorycraft.spec import TARGET_SCHEMES, HookPoint, TargetRef, Theory, load_theory
from theorycraft.store import ActivationSet, cache_root, capture as _capture
from theorycraft.targets import Target, as_target, load_target, source_identity

if TYPE_CHECKING:
    from theorycraft.inference import FittedTheory
    from theorycraft.refine import SearchResult
    from theorycraft.scoring import Scorecard


def target_of(theory_or_target: Theory | Target | str, *, trust_code: bool = False, texts=None,
              seq_len: int | None = None) -> Target:
    if isinstance(theory_or_target, Target):
        return theory_or_target
    ref = theory_or_target.target if isinstance(theory_or_target, Theory) else theory_or_target
    if ref is None:
        raise ArgumentError(f"theory '{theory_or_target.name}' names no target: add 'target:' to its file, or pass "
                            f"the model itself in Python (target=model, dataset=..., output=...)")
    if texts is not None or seq_len is not None:
        if not str(ref).startswith("hf:"):
            what = "--text and --data are the data" if texts is not None else "--seq-len sets the windows"
            raise ArgumentError(f"{what} of hf: targets; {ref} brings its own")
        from theorycraft.targets import load_hf_model
        address = ref.located if isinstance(ref, TargetRef) else str(ref).split(":", 1)[1]  # read from its file
        return load_hf_model(address, texts=texts, seq_len=seq_len)
    return load_target(ref, trust_code=trust_code)


def given(theory: Theory | None, target, dataset=None, output=None) -> tuple[Theory | None, Target | None]:
    """Where ``target=`` hands in a model object: (the theory naming it, its Target; see
    ``theorycraft.targets.as_target``); else (the theory, None)."""
    if target is None:
        if dataset is not None or output is not None:
            raise ArgumentError("dataset= and output= describe a model given as target=; pass target= too")
        return theory, None
    made = as_target(target, dataset=dataset, output=output)
    if theory is None:
        return None, made
    scheme, _, address = made.name.partition(":")
    ref = TargetRef(scheme, address) if scheme in TARGET_SCHEMES and address else TargetRef("model", made.name)
    return dataclasses.replace(theory, target=ref), made


def on_device(target: Target, device: str | None) -> Target:
    """The target with its forward passes on ``device`` (cpu, cuda, mps, auto; None: where it is,
    the CPU unless moved); a recording runs none, and is returned as it is."""
    if device is not None and hasattr(target, "to_device"):
        target.to_device(device)
    return target


def _device(device: str | None) -> str | None:
    """``device``, refused before anything loads where this machine has no such device."""
    if device is not None:
        from theorycraft.targets import resolve_device
        resolve_device(device)
    return device


def _request(source, hooks, n, seed, dtype, shift, texts, seq_len=None) -> "_cache.Request | None":
    """What the store's index knows a capture by, before any target loads (None for a loaded
    target, or one only running it can identify)."""
    if isinstance(source, Target):
        return None
    ref = source.target if isinstance(source, Theory) else source
    identity = source_identity(ref, texts, seq_len) if ref is not None else None
    if identity is None:
        return None
    return _cache.Request(identity, tuple(sorted({str(h) for h in hooks})), n, seed, dtype, shift)


def _reuse(request: "_cache.Request", cache_dir, log) -> ActivationSet | None:
    """A capture in the store that answers ``request``: the one it led to before, one of the same
    data holding more sites, or (no n asked for) one of another size, said through ``log``.
    None if a new capture is needed; ``log`` then hears of the sizes the store holds."""
    acts = _cache.recall(request, cache_dir)
    if acts is not None:
        return acts
    others = _cache.compatible(request, cache_dir)
    same = [acts for other, acts in others if other.n == request.n]
    if same:
        return same[0]
    held = ", ".join(f"{acts.key} ({acts.n} examples)" for _, acts in others)
    if others and request.n is None:
        acts = others[0][1]
        log(f"using capture {acts.key} of these sites ({acts.n} examples, data seed {request.seed}), as --n was not "
            f"given; pass --n N for a capture of N examples" + (f" (the store holds: {held})" if len(others) > 1 else ""))
        return acts
    if others:
        log(f"capturing {request.n} examples anew; the store holds these sites with data seed {request.seed} at "
            f"other sizes: {held} (reuse one with --capture KEY)")
    return None


def capture(theory_or_target: Theory | Target | str, sites: Sequence[str | HookPoint] | None = None, *,
            n: int | None = None, seed: int = 0, dtype: str = "float32", cache_dir=None,
            trust_code: bool = False, texts: Iterable[str] | None = None, batch_size: int = 256,
            progress: bool = True, shift: str | None = None, include_paths: Sequence[str] = (),
            log=None, part: tuple[int, int] | None = None, seq_len: int | None = None, target=None,
            dataset=None, output: str | None = None, device: str | None = None) -> ActivationSet | Path:
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
    n : int, optional
        Number of examples; default the target's dataset. With None, a stored capture of these
        sites at another size is reused, and ``log`` says which.
    seed : int
        The data seed: which examples, in which order, and so the test split.
    dtype : {"float32", "float16", "bfloat16"}
        Storage dtype of the activations.
    cache_dir : str or Path, optional
        The activation store; default ``$THEORYCRAFT_CACHE`` or the user cache directory.
    trust_code : bool
        Let ``torch:`` targets run their Python.
    texts : iterable of str, optional
        ``hf:`` targets: the texts to run instead of the target's own data.
    batch_size : int
        Examples per forward pass.
    progress : bool
        A progress bar on stderr.
    shift : str, optional
        One of the target's named shifted datasets (``target.shifts()``) instead of its own.
    include_paths : sequence of str
        Directories a theory file's includes may read from, besides its own.
    log : callable, optional
        Called with one message when another stored capture is reused; default silent.
    part : (int, int), optional
        ``(K, N)``: only every N-th shard from the K-th (K from 0), into a partial store; a capture
        of the same key without ``part`` (or ``infer``) merges the parts it finds and records only
        what they lack.

    seq_len : int, optional
        Tokens per window of an ``hf:`` target; default 128, or the model's positions if fewer.
    target : model, optional
        The model itself (a TransformerLens model, an nnsight-wrapped module, any ``nn.Module``,
        a ``UserModel``), instead of the target the theory names.
    dataset : array or callable, optional
        With ``target``: token ids [N, T] or vectors [N, D], or ``(n, seed) -> inputs``.
    output : str, optional
        With ``target``: what its output is (``"next-token"``, ``"logits"``, ``"regression"``).
    device : {"cpu", "cuda", "mps", "auto"}, optional
        Where the target's forward passes run (default the CPU); "auto": a GPU where there is one.
        A batch then holds at most ``batch_size`` examples, fewer where they would not fit its memory.

    Returns
    -------
    ActivationSet or Path
        The capture, on disk in the store; with ``part``, the partial store's directory.
    """
    n, seed, batch_size = (_arguments.check("n", n, optional=True), _arguments.check("seed", seed),
                           _arguments.check("batch_size", batch_size))
    seq_len = _arguments.check("seq_len", seq_len, optional=True)
    shift = _arguments.shift(shift)
    device = _device(device)
    if sites is not None:
        sites = [_arguments.site(s) for s in sites]  # checked before any target loads
    if isinstance(theory_or_target, str) and theory_or_target.endswith((".yaml", ".yml")):
        theory_or_target = load_theory(theory_or_target, include_paths=include_paths)
    theory, made = given(theory_or_target if isinstance(theory_or_target, Theory) else None, target, dataset, output)
    if made is not None:  # the model given: the theory's sites (or sites=) on it
        sites = sites if sites is not None or theory is None else [s.hook for s in theory.sites.values()]
        theory_or_target = made
    if sites is None and not isinstance(theory_or_target, Theory):  # said before any target loads
        name = getattr(theory_or_target, "name", theory_or_target)
        raise ArgumentError(f"name the sites to capture from {name} (--sites, or sites=[...] in Python; "
                            f"theorycraft sites {name} lists them), or capture a theory file")
    texts = tuple(texts) if texts else None
    hooks = [site.hook for site in theory_or_target.sites.values()] if sites is None else sites
    request = None if part else _request(theory_or_target, hooks, n, seed, dtype, shift, texts, seq_len)
    if request is not None and (acts := _reuse(request, cache_dir, log or (lambda message: None))) is not None:
        return acts
    target = on_device(target_of(theory_or_target, trust_code=trust_code, texts=texts, seq_len=seq_len), device)
    if device is not None and hasattr(target, "batch_size"):
        batch_size = target.batch_size(batch_size)
    acts = _capture(target, hooks, n=n, seed=seed, dtype=dtype, cache_dir=cache_dir, batch_size=batch_size,
                    progress=progress, shift=shift, part=part)
    if request is not None and isinstance(acts, ActivationSet):
        _cache.remember(request, acts, cache_dir)
    return acts


def open_capture(capture: ActivationSet | str | Path, theory: Theory | None = None, cache_dir=None) -> ActivationSet:
    """A capture named by key (or a unique prefix) in the store, or by its directory; with
    ``theory``, checked to hold every site it names."""
    acts = capture if isinstance(capture, ActivationSet) else _cache.find(capture, cache_dir)
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


def infer(theory: Theory | str, acts: ActivationSet | str | Path | None = None, *, out_dir=None, seed: int = 0,
          max_steps: int = 2000, learning_rate: float = 3e-3, batch_size: int = 512, n: int | None = None,
          cache_dir=None, trust_code: bool = False, progress: bool = True, fit_mode: str = "stagewise",
          log=print, max_memory: int | str | None = None, include_paths: Sequence[str] = (), data_seed: int = 0,
          dtype: str = "float32", texts: Iterable[str] | None = None, model_shards: int = 1,
          processes: int = 1, seq_len: int | None = None, restarts: int = 1, target=None, dataset=None,
          output: str | None = None, device: str | None = None) -> Inferred:
    """Fit ``theory`` to its target's activations (captured first if the store lacks them) and
    score its fidelity.

    Parameters
    ----------
    theory : Theory or str
        The theory, or its file.
    acts : ActivationSet, str or Path, optional
        A capture to fit on (an ActivationSet, or its key or directory); default the capture that
        ``n``, ``data_seed``, ``dtype`` and ``texts`` name (reused if stored).
    out_dir : str or Path, optional
        Where the fit is checkpointed (a rerun resumes) and saved as an artifact with its scorecard
        and ``metrics.jsonl``; default nowhere.
    seed : int
        Seed of the fit only, never of the data.
    max_steps : int
        Adam steps for parts without a closed form.
    learning_rate : float
        Adam learning rate.
    batch_size : int
        Examples per Adam step.
    n : int, optional
        Examples to capture; default the target's dataset (or a stored capture of any size).
    cache_dir : str or Path, optional
        The activation store.
    trust_code : bool
        Let ``torch:`` targets and ``kind: module:attr`` components run their Python.
    progress : bool
        Progress bars on stderr.
    fit_mode : {"stagewise", "joint"}
        "stagewise": each component fitted to the site it predicts, then held fixed for the sites
        that read it; "joint": every site at once, end to end through the components they share.
    log : callable, optional
        Called with each line of the fit's log.
    max_memory : int or str, optional
        Bytes, or text like "4G"; a theory whose fit would need more is refused first. Default
        what the machine has free.
    include_paths : sequence of str
        Directories the theory file's includes may read from, besides its own.
    data_seed : int
        Seed of the data: which examples, in which order, and so the test split.
    dtype : {"float32", "float16", "bfloat16"}
        Storage dtype of a new capture.
    texts : iterable of str, optional
        ``hf:`` targets: the texts to capture instead of the target's own data.
    model_shards : int
        Devices along the mesh's ``model`` axis, over which large parameters are split.
    processes : int
        Fit on N processes joined by ``jax.distributed``, each reading its own shards of the
        capture; without a cluster environment (THEORYCRAFT_COORDINATOR, ...) they are started
        here. In a process that has joined one (``join()``), every process fits and scores (the
        same numbers) and only process 0 writes.

    seq_len : int, optional
        Tokens per window of an ``hf:`` target; default 128, or the model's positions if fewer.
    restarts : int
        Adam fits from this many starts (seeds ``seed``, ``seed + 1``, ...), the best on validation
        kept; where their validation losses disagree, ``fit.converged`` is False and says so.
    target : model, optional
        The model itself, instead of the target the theory names (see ``capture``).
    dataset : array or callable, optional
        With ``target``: its data, token ids [N, T] or vectors [N, D], or ``(n, seed) -> inputs``.
    output : str, optional
        With ``target``: what its output is (``"next-token"``, ``"logits"``, ``"regression"``).
    device : {"cpu", "cuda", "mps", "auto"}, optional
        Where the target's forward passes run (default the CPU); "auto": a GPU where there is one.

    Returns
    -------
    Inferred
        ``(fitted, scorecard)``: the FittedTheory and its Scorecard (fidelity on every split), alike
        on every process.
    """
    from theorycraft.inference import FitConfig, fit
    from theorycraft.scoring import score

    from theorycraft.inference import engine as _distributed  # its cluster functions

    _arguments.check("n", n, optional=True)
    _arguments.check("processes", processes)
    config = FitConfig(seed=seed, max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size,
                       progress=progress, mode=fit_mode, max_memory=max_memory,
                       model_shards=model_shards, restarts=restarts)  # checked before anything loads
    theory = (load_theory(str(theory), trust_code=trust_code, include_paths=include_paths)
              if isinstance(theory, (str, Path)) else theory)
    out = output_directory(out_dir) if out_dir is not None else None  # before the capture: a bad --out wastes nothing
    theory, made = given(theory, target, dataset, output)
    acts = _activations(theory, acts, n=n, data_seed=data_seed, dtype=dtype, texts=texts, cache_dir=cache_dir,
                        trust_code=trust_code, progress=progress, log=log, seq_len=seq_len, target=made,
                        device=device)
    if processes > 1 and _distributed.cluster_from_environment() is None:  # start them here, on this machine
        return _infer_on_processes(processes, dict(theory=theory, acts=acts, out_dir=out, seed=seed, max_steps=max_steps,
                                                   learning_rate=learning_rate, batch_size=batch_size, progress=progress,
                                                   fit_mode=fit_mode, max_memory=max_memory, model_shards=model_shards,
                                                   trust_code=trust_code, restarts=restarts), log)
    if processes > 1 and processes != _distributed.process_count():
        raise ArgumentError(f"processes={processes}, but the cluster this process joined has "
                            f"{_distributed.process_count()} (THEORYCRAFT_NUM_PROCESSES)")
    fitted = fit(theory, acts, config, out_dir=out, log=log)
    card = score(fitted, acts, bits=False)  # every process scores its own shards; the sums are shared
    if out is not None and _distributed.is_leader():  # process 0 writes
        fitted.save(out)
        card.save(out)
    return Inferred(fitted, card)


def _activations(theory: Theory, acts, *, n, data_seed, dtype, texts, cache_dir, trust_code, progress, log,
                 seq_len=None, target: Target | None = None, device: str | None = None):
    """The capture a command fits on: ``acts`` if named (then no data option may be), else the
    one the data options name (captured if the store lacks it)."""
    if acts is not None:
        if n is not None or texts or seq_len is not None:
            raise ArgumentError("a named capture (--capture) is its own data: leave out --n, --text, --data and "
                                "--seq-len")
        return open_capture(acts, theory, cache_dir)
    return capture(theory, n=n, seed=data_seed, dtype=dtype, texts=texts, cache_dir=cache_dir, trust_code=trust_code,
                   progress=progress, log=log, seq_len=seq_len, target=target, device=device)


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


def search(start: Theory | str, *, vocabulary: str | None = None, out_dir=None, budget_bits: float | None = None,
           budget_minutes: float | None = None, tries: int = 4, seed: int = 0, max_steps: int = 2000,
           target_coverage: float = 0.99, compare: str | None = None, n: int | None = None, cache_dir=None,
           trust_code: bool = False, log=print, max_memory: int | str | None = None,
           include_paths: Sequence[str] = (), judge_cache: int | str | None = None,
           progress: bool = True, acts: ActivationSet | str | Path | None = None, data_seed: int = 0,
           dtype: str = "float32", texts: Iterable[str] | None = None,
           seq_len: int | None = None, target=None, dataset=None, output: str | None = None,
           device: str | None = None) -> "SearchResult":
    """Grow and prune a theory from ``start`` by held-out MDL, with candidates from ``vocabulary``.

    Parameters
    ----------
    start : Theory or str
        The theory to start from (its sites; components optional), or its file.
    vocabulary : str, optional
        A vocabulary YAML file of candidate components; default generated for the target's sites.
    out_dir : str or Path, optional
        Where the found theory, the trail, its plot, ``metrics.jsonl`` and the fitted artifact go;
        default ``runs/search-THEORY_NAME``.
    budget_bits : float, optional
        Never grow the theory past this many bits.
    budget_minutes : float, optional
        Stop after this many minutes.
    tries : int
        Best-estimated candidates fitted and scored per step.
    seed : int
        Seed of the fits only, never of the data.
    max_steps : int
        Adam steps per fit.
    target_coverage : float
        The coverage the scaling curve is asked about, in (0, 1).
    compare : str, optional
        A theory file over the same sites, judged the same way, for reference.
    n : int, optional
        Examples to capture; default the target's dataset.
    cache_dir : str or Path, optional
        The activation store.
    trust_code : bool
        Let ``torch:`` targets and ``kind: module:attr`` components run their Python.
    log : callable, optional
        Called with each line of the search's log.
    max_memory : int or str, optional
        Refuse a fit that would need more memory than this (bytes or text like "4G").
    include_paths : sequence of str
        Directories the theory files' includes may read from, besides their own.
    judge_cache : int or str, optional
        Bytes of judged theories' parameters kept for reuse; default 256 MB.
    progress : bool
        A bar over the steps (and one over the captures) on stderr.
    acts : ActivationSet, str or Path, optional
        A capture to search on (or its key or directory), as for ``infer``.
    data_seed : int
        Seed of the data, as for ``infer``.
    dtype : {"float32", "float16", "bfloat16"}
        Storage dtype of a new capture.
    texts : iterable of str, optional
        ``hf:`` targets: the texts to capture instead of the target's own data.
    seq_len : int, optional
        Tokens per window of an ``hf:`` target; default 128, or the model's positions if fewer.
    target : model, optional
        The model itself, instead of the target the theory names (see ``capture``).
    dataset : array or callable, optional
        With ``target``: its data, token ids [N, T] or vectors [N, D], or ``(n, seed) -> inputs``.
    output : str, optional
        With ``target``: what its output is (``"next-token"``, ``"logits"``, ``"regression"``).
    device : {"cpu", "cuda", "mps", "auto"}, optional
        Where the target's forward passes run (default the CPU); "auto": a GPU where there is one.

    Returns
    -------
    SearchResult
        The trail, the final theory's totals, its refitted scorecard, the scaling curve and the
        comparison, with ``out`` the directory written.
    """
    from theorycraft.inference import FitConfig
    from theorycraft.inference.engine import site_shapes
    from theorycraft.refine import (Judge, default_vocabulary, explained_sites, load_vocabulary, parse_vocabulary,
                                    search as run, write_search)

    for name, value in {"budget_bits": budget_bits, "budget_minutes": budget_minutes, "n": n}.items():
        _arguments.check(name, value, optional=True)
    _arguments.check("tries", tries)
    _arguments.check("target_coverage", target_coverage)
    config = FitConfig(seed=seed, max_steps=max_steps, progress=False, max_memory=max_memory)
    path = start if isinstance(start, str) else "<theory>"
    theory = load_theory(start, trust_code=trust_code, include_paths=include_paths) if isinstance(start, str) else start
    theory, made = given(theory, target, dataset, output)
    acts = _activations(theory, acts, n=n, data_seed=data_seed, dtype=dtype, texts=texts, cache_dir=cache_dir,
                        trust_code=trust_code, progress=progress, log=log, seq_len=seq_len, target=made,
                        device=device)
    if vocabulary:
        vocab = load_vocabulary(vocabulary, theory, trust_code=trust_code)
    else:
        _vocabulary_known(theory, acts)
        text = default_vocabulary(theory, site_shapes(theory, acts.sites), acts.inputs())
        vocab = parse_vocabulary(text, "<default vocabulary>", theory)
    judge = Judge(theory, acts, explained_sites(theory, vocab), config, **({"cache_bytes": judge_cache} if judge_cache else {}))
    out = output_directory(out_dir or Path("runs") / f"search-{theory.name}")
    result = run(theory, acts, vocab, judge=judge, budget_bits=budget_bits,
                 budget_seconds=budget_minutes * 60 if budget_minutes else None, tries=tries, log=log,
                 progress=progress, metrics=Metrics(out))
    reference = None
    if compare:
        judged = judge.assess(_same_sites(load_theory(compare, trust_code=trust_code, include_paths=include_paths), theory, compare))
        reference = {"theory": compare, "validation": judged.selection, "test": judged.report, "params": judged.params}
    return write_search(result, judge, out, start_path=path, target_coverage=target_coverage,
                        config=config, reference=reference)


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


def check(theory: Theory | str, *, run_dir=None, n: int | None = None, limit: int | None = None, seed: int = 0,
          cache_dir=None, trust_code: bool = False, log=print, max_memory: int | str | None = None,
          include_paths: Sequence[str] = (), data_seed: int = 0, seq_len: int | None = None, target=None,
          dataset=None, output: str | None = None, device: str | None = None) -> list:
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
    seed : int
        Seed of the fit and of the resampling.
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
    data_seed : int
        Seed of a new fit's data (which examples, and so the test split).
    seq_len : int, optional
        Tokens per window of a new fit's capture, for an ``hf:`` target; default 128, or the
        model's positions if fewer.
    target : model, optional
        The model itself, instead of the target the theory names (see ``capture``).
    dataset : array or callable, optional
        With ``target``: its data, token ids [N, T] or vectors [N, D], or ``(n, seed) -> inputs``.
    output : str, optional
        With ``target``: what its output is (``"next-token"``, ``"logits"``, ``"regression"``).
    device : {"cpu", "cuda", "mps", "auto"}, optional
        Where the target's forward passes run (default the CPU); "auto": a GPU where there is one.

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

    _arguments.check("n", n, optional=True)
    limit = _arguments.check("limit", limit, optional=True) or CHECK_EXAMPLES
    max_memory = _arguments.memory(max_memory, optional=True)
    seq_len = _arguments.check("seq_len", seq_len, optional=True)
    if (n is not None or seq_len is not None) and run_dir is not None:
        raise ArgumentError("--n and --seq-len set the data of a new fit; with --run the run's own capture is used")
    theory = (load_theory(str(theory), trust_code=trust_code, include_paths=include_paths)
              if isinstance(theory, (str, Path)) else theory)
    if not theory.axioms:
        raise FitError(f"theory '{theory.name}' states no axioms (add an 'axioms:' section; see spec/README.md)")
    device = _device(device)
    theory, made = given(theory, target, dataset, output)
    target = on_device(made or target_of(theory, trust_code=trust_code, seq_len=seq_len), device)
    if not hasattr(target, "intervene"):  # said before anything is fitted
        raise FitError(f"axioms intervene on the network, and {target.name} is a recording: point the theory at "
                       f"a runnable target (builtin:, hf:, torch:)")
    if run_dir is None:
        run_dir = Path("runs") / theory.name
        log(f"fitting {theory.name} into {run_dir} (pass --run RUN_DIR to check an existing fit)")
        fitted = infer(theory, out_dir=run_dir, seed=seed, n=n, cache_dir=cache_dir, trust_code=trust_code,
                       progress=False, log=lambda m: None, max_memory=max_memory, data_seed=data_seed,
                       seq_len=seq_len, target=made, device=device).fitted
    else:
        fitted = load_run(run_dir, trust_code=trust_code)
        if _structure(fitted.theory) != _structure(theory):
            raise FitError(f"{run_dir} holds a fit of a different theory than {theory.name}'s file (its sites, "
                           f"variables or components differ); fit this one: theorycraft infer THEORY.yaml --out {run_dir}")
    fitted = fitted.with_theory(theory)  # the file's axioms, the run's parameters
    acts = run_activations(fitted, Path(run_dir), cache_dir)
    inputs = acts.inputs()
    lab = Lab(fitted, target, inputs[acts.split("test")[:limit]], inputs[acts.split("train")[:TRAIN_EXAMPLES]], seed=seed)
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


def score_run(run_dir, *, prequential: bool = False, splice: bool = True, trust_code: bool = False,
              limit: int | None = None, shift: str | None = None, n: int | None = None,
              max_memory: int | str | None = None, cache_dir=None, acts: ActivationSet | str | Path | None = None,
              texts: Iterable[str] | None = None, data_seed: int | None = None,
              dtype: str | None = None, log=print, target=None, output: str | None = None,
              device: str | None = None) -> "Scorecard":
    """Score the artifact in ``run_dir`` and write the result into its scorecard.json.

    Parameters
    ----------
    run_dir : str or Path
        An artifact directory written by ``infer``.
    prequential : bool
        Also the prequential (online) code: refits the theory on growing prefixes of the data.
    splice : bool
        Run the target with each site replaced by the theory's prediction (runnable targets).
    trust_code : bool
        Let ``torch:`` targets and ``kind: module:attr`` components run their Python.
    limit : int, optional
        Score on the first ``limit`` validation and test examples.
    shift : str, optional
        Also capture the theory's sites on this named shift of its target (into the same store)
        and add the coverage there to the scorecard's ``shifted`` (earlier shifts' entries are kept).
    n : int, optional
        Examples of the shifted capture; default as many as the run's own capture.
    max_memory : int or str, optional
        Bounds the prequential refits; default what the machine has free.
    cache_dir : str or Path, optional
        The activation store to look the run's capture up in first.
    acts : ActivationSet, str or Path, optional
        The capture (or its key or directory) to score on instead of the run's own.
    texts : iterable of str, optional
        ``hf:`` targets: score on this text too, entered as ``shift`` (default "text"), in windows
        as long as the run's.
    data_seed : int, optional
        Data seed of the shifted capture; default the run's.
    dtype : str, optional
        Storage dtype of the shifted capture; default the run's.
    log : callable, optional
        Told what the earlier scorecard held that this score keeps (splice, counterfactual
        fidelity, the prequential code: whatever this score does not measure again).
    target : model, optional
        The model itself (a run fitted on a model given in Python splices only with it).
    output : str, optional
        With ``target``: what its output is (``"next-token"``, ``"logits"``, ``"regression"``).
    device : {"cpu", "cuda", "mps", "auto"}, optional
        Where the target's forward passes run (default the CPU); "auto": a GPU where there is one.

    Returns
    -------
    Scorecard
        The scorecard, as written: this score's figures, with the earlier ones it did not
        measure again.
    """
    from theorycraft.scoring import Scorecard, score

    _arguments.check("limit", limit, optional=True)
    _arguments.check("n", n, optional=True)
    max_memory = _arguments.memory(max_memory, optional=True)
    shift = _arguments.shift(shift)
    texts = tuple(texts) if texts else None
    if texts and shift is None:
        shift = "text"
    if shift is None and (n is not None or data_seed is not None or dtype is not None):
        raise ArgumentError("n, the data seed and dtype size the shifted capture: give a shift too (--shift NAME, "
                            "or --text/--data), or leave them out")
    run_dir = Path(run_dir)
    fitted = load_run(run_dir, trust_code=trust_code)
    acts = run_activations(fitted, run_dir, cache_dir, acts)
    target = as_target(target, dataset=acts.inputs(), output=output) if target is not None else None
    runnable = fitted.theory.target is not None and fitted.theory.target.scheme in ("builtin", "hf", "torch")
    if target is None and (splice or (shift and not texts)) and runnable:
        target = target_of(fitted.theory, trust_code=trust_code)
    target = on_device(target, _device(device)) if target is not None else None
    try:  # what was scored before is kept where this score does not measure it again
        earlier = Scorecard.load(run_dir)
    except ArtifactError:  # a card this version cannot read holds nothing to keep
        earlier = None
    shifted = dict(earlier.shifted) if earlier is not None else {}
    if shift is not None:
        shifted[shift] = score_shift(fitted, acts, shift, target=target, n=n, trust_code=trust_code, texts=texts,
                                     data_seed=data_seed, dtype=dtype, splice=splice)
    card = score(fitted, acts, target=target if splice else None, prequential=prequential, limit=limit,
                 max_memory=max_memory)
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
