"""The library's front: parse -> capture -> infer -> score, one small function each."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

from theorycraft import _arguments
from theorycraft.errors import ArgumentError, ArtifactError, FitError
from theorycraft.spec import HookPoint, Theory, load_theory
from theorycraft.store import ActivationSet, capture as _capture
from theorycraft.targets import Target, load_target

if TYPE_CHECKING:
    from theorycraft.inference import FittedTheory
    from theorycraft.refine import SearchResult
    from theorycraft.scoring import Scorecard


def target_of(theory_or_target: Theory | Target | str, *, trust_code: bool = False, texts=None,
              seq_len: int | None = None) -> Target:
    if isinstance(theory_or_target, Target):
        return theory_or_target
    ref = theory_or_target.target if isinstance(theory_or_target, Theory) else theory_or_target
    if seq_len is not None and not str(ref).startswith("hf:"):
        raise ArgumentError(f"seq_len (--seq-len) sets the windows of an hf: target; {ref} is not one")
    if (texts is not None or seq_len is not None) and str(ref).startswith("hf:"):
        from theorycraft.targets._hf import load_hf_model
        return load_hf_model(str(ref).split(":", 1)[1], texts=texts, seq_len=seq_len)
    return load_target(ref, trust_code=trust_code)


def capture(theory_or_target: Theory | Target | str, sites: Sequence[str | HookPoint] | None = None, *,
            n: int | None = None, seed: int = 0, dtype: str = "float32", cache_dir=None,
            trust_code: bool = False, texts: Iterable[str] | None = None, batch_size: int = 256,
            progress: bool = True, shift: str | None = None, include_paths: Sequence[str] = (),
            seq_len: int | None = None) -> ActivationSet:
    """Record a theory's sites (or ``sites`` of a target) into the store; reuse a capture of the
    same (target, sites, data) if there is one. ``shift``: one of the target's named shifted
    datasets (``target.shifts()``) instead of its own. ``seq_len``: tokens per window of an
    ``hf:`` target (default 128, or the model's positions if fewer)."""
    n, seed, batch_size = (_arguments.check("n", n, optional=True), _arguments.check("seed", seed),
                           _arguments.check("batch_size", batch_size))
    seq_len = _arguments.check("seq_len", seq_len, optional=True)
    shift = _arguments.shift(shift)
    if sites is not None:
        sites = [_arguments.site(s) for s in sites]  # checked before any target loads
    if isinstance(theory_or_target, str) and theory_or_target.endswith((".yaml", ".yml")):
        theory_or_target = load_theory(theory_or_target, include_paths=include_paths)
    if sites is None and not isinstance(theory_or_target, Theory):  # said before any target loads
        name = getattr(theory_or_target, "name", theory_or_target)
        raise ArgumentError(f"name the sites to capture from {name} (--sites, or sites=[...] in Python; "
                            f"theorycraft sites {name} lists them), or capture a theory file")
    target = target_of(theory_or_target, trust_code=trust_code, texts=tuple(texts) if texts else None,
                       seq_len=seq_len)
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
          log=print, max_memory: int | str | None = None, include_paths: Sequence[str] = (),
          seq_len: int | None = None) -> Inferred:
    """Fit ``theory`` to its target's activations (captured first if the store lacks them) and
    score its fidelity. With ``out_dir`` the fit is checkpointed there (a rerun resumes) and
    saved as an artifact with its scorecard. ``fit_mode``: "stagewise" (each component fitted to
    the site it predicts, then held fixed for the sites that read it) or "joint" (every site at
    once, end to end through the components they share). ``max_memory`` (bytes, or text like "4G";
    default: what the machine has free): a theory whose fit would need more is refused first.
    ``seq_len``: tokens per window of an ``hf:`` target's capture."""
    from theorycraft.inference import FitConfig, fit
    from theorycraft.scoring import score

    _arguments.check("n", n, optional=True)
    config = FitConfig(seed=seed, max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size,
                       progress=progress, mode=fit_mode, max_memory=max_memory)  # checked before anything loads
    theory = (load_theory(str(theory), trust_code=trust_code, include_paths=include_paths)
              if isinstance(theory, (str, Path)) else theory)
    if acts is None:
        acts = capture(theory, n=n, seed=seed, cache_dir=cache_dir, trust_code=trust_code, progress=progress,
                       seq_len=seq_len)
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
    """Grow and prune a theory from ``start`` with candidates from ``vocabulary`` (a YAML file;
    default: generated for the target's sites). Writes the found theory, the trail, the plot and
    the fitted artifact to ``out_dir``; ``compare`` (a theory file over the same sites) is judged
    the same way, for reference. ``judge_cache``: bytes of judged theories' parameters kept for
    reuse (default 256 MB); ``progress``: a bar over the steps on stderr."""
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
    acts = capture(theory, n=n, seed=seed, cache_dir=cache_dir, trust_code=trust_code, progress=False)
    if vocabulary:
        vocab = load_vocabulary(vocabulary, theory, trust_code=trust_code)
    else:
        text = default_vocabulary(theory, site_shapes(theory, acts.sites), acts.inputs())
        vocab = parse_vocabulary(text, "<default vocabulary>", theory)
    judge = Judge(theory, acts, explained_sites(theory, vocab), config, **({"cache_bytes": judge_cache} if judge_cache else {}))
    result = run(theory, acts, vocab, judge=judge, budget_bits=budget_bits,
                 budget_seconds=budget_minutes * 60 if budget_minutes else None, tries=tries, log=log,
                 progress=progress)
    out = Path(out_dir or Path("runs") / f"search-{theory.name}")
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
    """Check every axiom of ``theory`` on ``limit`` held-out (test) examples (default 512): the
    network intervened on with torch hooks, the theory run free under the same intervention. The
    fit is ``run_dir``'s (it must be of the same theory, axioms and docs aside), or a new one on
    ``n`` examples, written to runs/THEORY_NAME. Writes ``axioms.json`` there; returns one
    ``AxiomResult`` per axiom."""
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
    """Score the artifact in ``run_dir`` and write the result into its scorecard.json. ``shift``
    also captures the theory's sites on that named shift of its target (``n`` examples, default
    as many as its own capture, into the same store) and adds the coverage there to the
    scorecard's ``shifted`` (earlier shifts' entries are kept). ``max_memory`` bounds the
    prequential refits (default: what the machine has free)."""
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
