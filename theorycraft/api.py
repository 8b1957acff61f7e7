"""The library's front: parse -> capture -> infer -> score, one small function each."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

from theorycraft import _arguments
from theorycraft._metrics import Metrics
from theorycraft.errors import ArgumentError, ArtifactError, FitError
from theorycraft.spec import HookPoint, Theory, load_theory
from theorycraft.store import ActivationSet, capture as _capture
from theorycraft.targets import Target, load_target

if TYPE_CHECKING:
    from theorycraft.inference import FittedTheory
    from theorycraft.refine import SearchResult
    from theorycraft.scoring import Scorecard


def target_of(theory_or_target: Theory | Target | str, *, trust_code: bool = False, texts=None) -> Target:
    if isinstance(theory_or_target, Target):
        return theory_or_target
    ref = theory_or_target.target if isinstance(theory_or_target, Theory) else theory_or_target
    if texts is not None and str(ref).startswith("hf:"):
        from theorycraft.targets._hf import load_hf_model
        return load_hf_model(str(ref).split(":", 1)[1], texts=texts)
    return load_target(ref, trust_code=trust_code)


def capture(theory_or_target: Theory | Target | str, sites: Sequence[str | HookPoint] | None = None, *,
            n: int | None = None, seed: int = 0, dtype: str = "float32", cache_dir=None,
            trust_code: bool = False, texts: Iterable[str] | None = None, batch_size: int = 256,
            progress: bool = True, shift: str | None = None, include_paths: Sequence[str] = ()) -> ActivationSet:
    """Record a theory's sites (or ``sites`` of a target) into the store; reuse a capture of the
    same (target, sites, data) if there is one.

    Parameters
    ----------
    theory_or_target : Theory, Target or str
        A theory (or a theory file, ``.yaml``) whose sites to record, or a target (or a reference
        like ``builtin:induction``) with ``sites``.
    sites : sequence of str or HookPoint, optional
        Hook points to record; default the theory's (a target needs them).
    n : int, optional
        Number of examples; default the target's dataset.
    seed : int
        Seed of the data and its one shuffle.
    dtype : {"float32", "float16", "bfloat16"}
        Storage dtype of the activations.
    cache_dir : str or Path, optional
        The activation store; default ``$THEORYCRAFT_CACHE`` or ``~/.cache/theorycraft``.
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

    Returns
    -------
    ActivationSet
        The capture, on disk in the store.
    """
    n, seed, batch_size = (_arguments.check("n", n, optional=True), _arguments.check("seed", seed),
                           _arguments.check("batch_size", batch_size))
    shift = _arguments.shift(shift)
    if sites is not None:
        sites = [_arguments.site(s) for s in sites]  # checked before any target loads
    if isinstance(theory_or_target, str) and theory_or_target.endswith((".yaml", ".yml")):
        theory_or_target = load_theory(theory_or_target, include_paths=include_paths)
    if sites is None and not isinstance(theory_or_target, Theory):  # said before any target loads
        name = getattr(theory_or_target, "name", theory_or_target)
        raise ArgumentError(f"name the sites to capture from {name} (--sites, or sites=[...] in Python; "
                            f"theorycraft sites {name} lists them), or capture a theory file")
    target = target_of(theory_or_target, trust_code=trust_code, texts=tuple(texts) if texts else None)
    hooks = [site.hook for site in theory_or_target.sites.values()] if sites is None else sites
    return _capture(target, hooks, n=n, seed=seed, dtype=dtype, cache_dir=cache_dir, batch_size=batch_size,
                    progress=progress, shift=shift)


class Inferred(NamedTuple):
    """What ``infer`` returns: the fitted theory and its scorecard (fidelity on every split)."""

    fitted: "FittedTheory"
    scorecard: "Scorecard"


def infer(theory: Theory | str, acts: ActivationSet | None = None, *, out_dir=None, seed: int = 0,
          max_steps: int = 2000, learning_rate: float = 3e-3, batch_size: int = 512, n: int | None = None,
          cache_dir=None, trust_code: bool = False, progress: bool = True, fit_mode: str = "stagewise",
          log=print, max_memory: int | str | None = None, include_paths: Sequence[str] = ()) -> Inferred:
    """Fit ``theory`` to its target's activations (captured first if the store lacks them) and
    score its fidelity.

    Parameters
    ----------
    theory : Theory or str
        The theory, or its file.
    acts : ActivationSet, optional
        The activations to fit on; default a capture of the theory's sites (reused if stored).
    out_dir : str or Path, optional
        Where the fit is checkpointed (a rerun resumes) and saved as an artifact with its scorecard
        and ``metrics.jsonl``; default nowhere.
    seed : int
        Seed of the fit (and of the capture's data).
    max_steps : int
        Adam steps for parts without a closed form.
    learning_rate : float
        Adam learning rate.
    batch_size : int
        Examples per Adam step.
    n : int, optional
        Examples to capture; default the target's dataset.
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

    Returns
    -------
    Inferred
        ``(fitted, scorecard)``: the FittedTheory and its Scorecard (fidelity on every split).
    """
    from theorycraft.inference import FitConfig, fit
    from theorycraft.scoring import score

    _arguments.check("n", n, optional=True)
    config = FitConfig(seed=seed, max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size,
                       progress=progress, mode=fit_mode, max_memory=max_memory)  # checked before anything loads
    theory = (load_theory(str(theory), trust_code=trust_code, include_paths=include_paths)
              if isinstance(theory, (str, Path)) else theory)
    if acts is None:
        acts = capture(theory, n=n, seed=seed, cache_dir=cache_dir, trust_code=trust_code, progress=progress)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    fitted = fit(theory, acts, config, out_dir=out, log=log)
    card = score(fitted, acts, bits=False)
    if out is not None:
        fitted.save(out)
        card.save(out)
    return Inferred(fitted, card)


def search(start: Theory | str, *, vocabulary: str | None = None, out_dir=None, budget_bits: float | None = None,
           budget_minutes: float | None = None, tries: int = 4, seed: int = 0, max_steps: int = 2000,
           target_coverage: float = 0.99, compare: str | None = None, n: int | None = None, cache_dir=None,
           trust_code: bool = False, log=print, max_memory: int | str | None = None,
           include_paths: Sequence[str] = (), judge_cache: int | str | None = None,
           progress: bool = True) -> "SearchResult":
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
        Seed of the fits and of the capture's data.
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

    Returns
    -------
    SearchResult
        The trail, the final theory's totals, its refitted scorecard, the scaling curve and the
        comparison, with ``out`` the directory written.
    """
    from theorycraft.inference import FitConfig
    from theorycraft.inference._fit import site_shapes
    from theorycraft.refine import (Judge, default_vocabulary, explained_sites, load_vocabulary, parse_vocabulary,
                                    search as run, write_search)

    for name, value in {"budget_bits": budget_bits, "budget_minutes": budget_minutes, "n": n}.items():
        _arguments.check(name, value, optional=True)
    _arguments.check("tries", tries)
    _arguments.check("target_coverage", target_coverage)
    config = FitConfig(seed=seed, max_steps=max_steps, progress=False, max_memory=max_memory)
    path = start if isinstance(start, str) else "<theory>"
    theory = load_theory(start, trust_code=trust_code, include_paths=include_paths) if isinstance(start, str) else start
    acts = capture(theory, n=n, seed=seed, cache_dir=cache_dir, trust_code=trust_code, progress=progress)
    if vocabulary:
        vocab = load_vocabulary(vocabulary, theory, trust_code=trust_code)
    else:
        text = default_vocabulary(theory, site_shapes(theory, acts.sites), acts.inputs())
        vocab = parse_vocabulary(text, "<default vocabulary>", theory)
    judge = Judge(theory, acts, explained_sites(theory, vocab), config, **({"cache_bytes": judge_cache} if judge_cache else {}))
    out = Path(out_dir or Path("runs") / f"search-{theory.name}")
    result = run(theory, acts, vocab, judge=judge, budget_bits=budget_bits,
                 budget_seconds=budget_minutes * 60 if budget_minutes else None, tries=tries, log=log,
                 progress=progress, metrics=Metrics(out))
    reference = None
    if compare:
        judged = judge.assess(_same_sites(load_theory(compare, trust_code=trust_code, include_paths=include_paths), theory, compare))
        reference = {"theory": compare, "validation": judged.selection, "test": judged.report, "params": judged.params}
    return write_search(result, judge, out, start_path=path, target_coverage=target_coverage,
                        config=config, reference=reference)


def _same_sites(theory: Theory, start: Theory, path: str) -> Theory:
    from theorycraft.errors import FitError

    if theory.target != start.target or any(start.sites.get(n) != s for n, s in theory.sites.items()):
        raise FitError(f"{path}: a theory to compare with must have the start's target and sites "
                       f"({start.target}: {', '.join(start.sites)})")
    return theory


def run_activations(fitted: "FittedTheory", run_dir: Path) -> ActivationSet:
    """The capture a fitted theory was fitted on (named in its fit record)."""
    directory = fitted.fit_info.get("data", {}).get("directory")
    if not directory:
        raise FitError(f"{run_dir} does not say which activations it was fitted on; rerun theorycraft infer")
    if not Path(directory, "manifest.json").exists():
        raise FitError(f"the activations {run_dir} was fitted on are gone ({directory}); rerun theorycraft infer")
    return ActivationSet(directory)


def load_run(run_dir, *, trust_code: bool = False) -> "FittedTheory":
    """The fitted theory of an artifact directory, every file of it (the scorecard too) verified
    against its recorded checksum first."""
    from theorycraft import _artifact
    from theorycraft.inference import FittedTheory

    _artifact.verify(run_dir)
    return FittedTheory.load(run_dir, trust_code=trust_code)


def check(theory: Theory | str, *, run_dir=None, n: int | None = None, limit: int | None = None, seed: int = 0,
          cache_dir=None, trust_code: bool = False, log=print, max_memory: int | str | None = None,
          include_paths: Sequence[str] = ()) -> list:
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

    _arguments.check("n", n, optional=True)
    limit = _arguments.check("limit", limit, optional=True) or CHECK_EXAMPLES
    max_memory = _arguments.memory(max_memory, optional=True)
    if n is not None and run_dir is not None:
        raise ArgumentError("--n sets the examples of a new fit; with --run the run's own capture is used")
    theory = (load_theory(str(theory), trust_code=trust_code, include_paths=include_paths)
              if isinstance(theory, (str, Path)) else theory)
    if not theory.axioms:
        raise FitError(f"theory '{theory.name}' states no axioms (add an 'axioms:' section; see spec/README.md)")
    target = target_of(theory, trust_code=trust_code)
    if not hasattr(target, "intervene"):  # said before anything is fitted
        raise FitError(f"axioms intervene on the network, and {target.name} is a recording: point the theory at "
                       f"a runnable target (builtin:, hf:, torch:)")
    if run_dir is None:
        run_dir = Path("runs") / theory.name
        log(f"fitting {theory.name} into {run_dir} (pass --run RUN_DIR to check an existing fit)")
        fitted = infer(theory, out_dir=run_dir, seed=seed, n=n, cache_dir=cache_dir, trust_code=trust_code,
                       progress=False, log=lambda m: None, max_memory=max_memory).fitted
    else:
        fitted = load_run(run_dir, trust_code=trust_code)
        if _structure(fitted.theory) != _structure(theory):
            raise FitError(f"{run_dir} holds a fit of a different theory than {theory.name}'s file (its sites, "
                           f"variables or components differ); fit this one: theorycraft infer THEORY.yaml --out {run_dir}")
    fitted = fitted.with_theory(theory)  # the file's axioms, the run's parameters
    acts = run_activations(fitted, Path(run_dir))
    inputs = acts.inputs()
    lab = Lab(fitted, target, inputs[acts.split("test")[:limit]], inputs[acts.split("train")[:TRAIN_EXAMPLES]], seed=seed)
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


def score_run(run_dir, *, prequential: bool = False, splice: bool = True, trust_code: bool = False,
              limit: int | None = None, shift: str | None = None, n: int | None = None,
              max_memory: int | str | None = None) -> "Scorecard":
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
        Also capture the theory's sites on this named shift of its target and add the coverage
        there to the scorecard's ``shifted`` (earlier shifts' entries are kept).
    n : int, optional
        Examples of the shifted capture; default as many as the run's own capture.
    max_memory : int or str, optional
        Bounds the prequential refits; default what the machine has free.

    Returns
    -------
    Scorecard
        The scorecard, as written.
    """
    from theorycraft.scoring import Scorecard, score

    _arguments.check("limit", limit, optional=True)
    _arguments.check("n", n, optional=True)
    max_memory = _arguments.memory(max_memory, optional=True)
    shift = _arguments.shift(shift)
    if n is not None and shift is None:
        raise ArgumentError("n sizes the shifted capture: give a shift too (--shift NAME), or leave n out")
    run_dir = Path(run_dir)
    fitted = load_run(run_dir, trust_code=trust_code)
    acts = run_activations(fitted, run_dir)
    target = None
    if (splice or shift) and fitted.theory.target.scheme in ("builtin", "hf", "torch"):
        target = target_of(fitted.theory, trust_code=trust_code)
    try:  # the shifts scored before are kept (a card this version cannot read holds none to keep)
        shifted = dict(Scorecard.load(run_dir).shifted)
    except ArtifactError:
        shifted = {}
    if shift is not None:
        shifted[shift] = score_shift(fitted, acts, shift, target=target, n=n, trust_code=trust_code)
    card = score(fitted, acts, target=target if splice else None, prequential=prequential, limit=limit,
                 max_memory=max_memory)
    card = card.replace(shifted=shifted)
    card.save(run_dir)
    return card


def score_shift(fitted: "FittedTheory", acts: ActivationSet, shift: str, *, target: Target | None = None,
                n: int | None = None, trust_code: bool = False, progress: bool = True):
    """The coverage of ``fitted`` (fitted on ``acts``) on the named shift of its target: its sites
    captured there (``n`` examples, default ``acts.n``; same seed, same store), scored by the one
    scorer on that capture's test examples the fit never saw (a ``ShiftScore``)."""
    from theorycraft.scoring import score_shifted

    target = target or target_of(fitted.theory, trust_code=trust_code)
    shifted = _capture(target, [site.hook for site in fitted.theory.sites.values()], n=n or acts.n,
                       seed=acts.manifest["dataset"]["seed"], dtype=acts.manifest["dtype"],
                       cache_dir=acts.directory.parent, progress=progress, shift=shift)
    return score_shifted(fitted, shifted, acts)
