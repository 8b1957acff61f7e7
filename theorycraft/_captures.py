"""The front's data access: the target a theory names (or the model object handed in as
``target=``, on its device), its captures (reused from the store, or recorded), a capture named
by key or directory, and the capture and fit of a run directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from theorycraft.configs import CaptureConfig, ScoreConfig, document, site
from theorycraft.errors import ArgumentError, FitError
from theorycraft.spec import SCHEMES, HookPoint, TargetRef, Theory, load_theory, schemes_text
from theorycraft.store import ActivationSet, Request, Store, cache_root
from theorycraft.targets import Target, as_target, load_target, source_identity

if TYPE_CHECKING:
    from theorycraft.inference import FittedTheory


def target_of(theory_or_target: Theory | Target | str, *, trust_code: bool = False, texts=None,
              seq_len: int | None = None) -> Target:
    if isinstance(theory_or_target, Target):
        return theory_or_target
    ref = theory_or_target.target if isinstance(theory_or_target, Theory) else theory_or_target
    if ref is None:
        raise ArgumentError(f"theory '{theory_or_target.name}' names no target: add 'target:' to its file, or pass "
                            f"the model itself in Python (target=model, dataset=..., output=...)")
    if texts is not None or seq_len is not None:
        scheme = str(ref).partition(":")[0]
        if not (scheme in SCHEMES and SCHEMES[scheme].texts):
            what = "{texts} are the data" if texts is not None else "{seq_len} sets the windows"
            raise ArgumentError(f"{what} of {schemes_text(_texts_schemes(), bare=True)} targets; {ref} brings its own",
                                params=("texts", "seq_len"))
        from theorycraft.targets import load_hf_model
        address = ref.located if isinstance(ref, TargetRef) else str(ref).split(":", 1)[1]  # read from its file
        return load_hf_model(address, texts=texts, seq_len=seq_len)
    return load_target(ref, trust_code=trust_code)


def _texts_schemes():
    return [s for s in SCHEMES.values() if s.texts]


def _runnable():
    """The schemes a reference loads a model that runs (``model:`` names one given in Python)."""
    return [s for s in SCHEMES.values() if s.runnable and not s.given]


# the parameters with which a model object is handed in, said once for every function that takes them
MODEL_PARAMETERS = {
    "target": ("model, optional", "The model itself (a TransformerLens model, an nnsight-wrapped module, a "
               "transformers model, any ``nn.Module``, a ``UserModel``), instead of the target the theory names."),
    "dataset": ("array or callable, optional", "With ``target``: its data, token ids [N, T] or vectors [N, D], or "
                "``(n, seed) -> inputs``."),
    "output": ("str, optional", 'With ``target``: what its output is (``"next-token"``, ``"logits"``, '
               '``"regression"``).'),
}


def document_model(*names: str):
    """Fill the ``{model}`` line of a library function's docstring with the entries of
    MODEL_PARAMETERS it takes (``names``; default all)."""
    import textwrap

    def fill(function):
        lines = []
        for name in names or MODEL_PARAMETERS:
            kind, text = MODEL_PARAMETERS[name]
            lines += [f"    {name} : {kind}", *textwrap.wrap(text, 100, initial_indent=" " * 8,
                                                             subsequent_indent=" " * 8)]
        assert "    {model}\n" in function.__doc__, function.__name__
        function.__doc__ = function.__doc__.replace("    {model}\n", "\n".join(lines) + "\n")
        return function
    return fill


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
    ref = TargetRef(scheme, address) if scheme in SCHEMES and address else TargetRef("model", made.name)
    return dataclasses.replace(theory, target=ref), made


def on_device(target: Target, device: str | None) -> Target:
    """The target with its forward passes on ``device`` (cpu, cuda, mps, auto; None: where it is,
    the CPU unless moved); a recording runs none, and is returned as it is."""
    if device is not None and hasattr(target, "to_device"):
        target.to_device(device)
    return target


def checked_device(device: str | None) -> str | None:
    """``device``, refused before anything loads where this machine has no such device."""
    if device is not None:
        from theorycraft.targets import resolve_device
        resolve_device(device)
    return device


def _request(source, hooks, config: CaptureConfig, texts) -> Request | None:
    """What the store's index knows a capture by, before any target loads (None for a loaded
    target, or one only running it can identify)."""
    if isinstance(source, Target):
        return None
    ref = source.target if isinstance(source, Theory) else source
    identity = source_identity(ref, texts, config.seq_len) if ref is not None else None
    if identity is None:
        return None
    return Request(identity, tuple(sorted({str(h) for h in hooks})), config.n, config.seed, config.dtype,
                          config.shift)


@document_model()
@document(CaptureConfig, "config", n=None, seed="data_seed", dtype=None, batch_size=None, shift=None, seq_len=None,
          device=None)
def capture(theory_or_target: Theory | Target | str, sites: Sequence[str | HookPoint] | None = None, *,
            config: CaptureConfig | None = None, cache_dir=None, trust_code: bool = False,
            texts: Iterable[str] | None = None, progress: bool = True, include_paths: Sequence[str] = (),
            log=None, part: tuple[int, int] | None = None, n: int | None = None, seed: int | None = None,
            dtype: str | None = None, batch_size: int | None = None, shift: str | None = None,
            seq_len: int | None = None, target=None, dataset=None, output: str | None = None,
            device: str | None = None) -> ActivationSet | Path:
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
    {model}
    {config: CaptureConfig}

    Returns
    -------
    ActivationSet or Path
        The capture, on disk in the store; with ``part``, the partial store's directory.
    """
    config = CaptureConfig.of(config, n=n, seed=seed, dtype=dtype, batch_size=batch_size, shift=shift,
                              seq_len=seq_len, device=device)
    checked_device(config.device)
    if sites is not None:
        sites = [site(s) for s in sites]  # checked before any target loads
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
    hooks = [s.hook for s in theory_or_target.sites.values()] if sites is None else sites
    store, request = Store(cache_dir), None if part else _request(theory_or_target, hooks, config, texts)
    if request is not None and (acts := store.reuse(request, log or (lambda message: None))) is not None:
        return acts
    loaded = on_device(target_of(theory_or_target, trust_code=trust_code, texts=texts, seq_len=config.seq_len),
                       config.device)
    if config.device is not None and hasattr(loaded, "batch_size"):  # what fits the device's memory
        config = dataclasses.replace(config, batch_size=loaded.batch_size(config.batch_size))
    return store.capture(loaded, hooks, config, request=request, progress=progress, part=part)


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


def _data(data: CaptureConfig | None, acts, texts, **fields) -> CaptureConfig | None:
    """The capture config of a command that fits (``data`` with the ``fields`` given), or None
    with a named capture ``acts``, which is its own data: then none of them may be given (nor a
    device: nothing runs the target)."""
    if acts is None:
        return CaptureConfig.of(data, **fields)
    named = [name for name, value in {"data": data, "texts": texts or None, **fields}.items() if value is not None]
    if named:
        names = ["data_seed" if n == "seed" else n for n in named]
        raise ArgumentError(f"a named capture ({{acts}}) is its own data: leave out "
                            f"{', '.join('{' + n + '}' for n in names)}", params=("acts", *names))
    return None


def _score_settings(config: ScoreConfig, shift: str | None) -> None:
    """An ArgumentError for a setting of ``score`` that would do nothing (``shift``: the shift it
    scores on, a named one or "text", else None)."""
    if shift is None and (config.n is not None or config.data_seed is not None or config.dtype is not None):
        raise ArgumentError("{n}, the data seed ({data_seed}) and {dtype} size the shifted capture: give a shift too "
                            "({shift} NAME, or {texts}), or leave them out",
                            params=("n", "data_seed", "dtype", "shift", "texts"))
    if config.max_memory is not None and not config.prequential:
        raise ArgumentError("{max_memory} bounds the prequential code's refits: give {prequential} too, or leave it "
                            "out", params=("max_memory", "prequential"))
    if config.device is not None and not config.splice and shift is None:
        raise ArgumentError("{device} is where the splices and a shift's capture run: with no splice ({splice}) and "
                            "no {shift}, nothing runs the target; leave it out", params=("device", "splice", "shift"))


def _activations(theory: Theory, acts, data: CaptureConfig | None, *, texts, cache_dir, trust_code, progress, log,
                 target: Target | None = None):
    """The capture a command fits on: ``acts`` if named, else the one ``data`` names (captured
    if the store lacks it; of ``target``, a model given in Python, where there is one)."""
    if acts is not None:
        return open_capture(acts, theory, cache_dir)
    return capture(theory, config=data, texts=texts, cache_dir=cache_dir, trust_code=trust_code, progress=progress,
                   log=log, target=target)


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
