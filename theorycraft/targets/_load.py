"""target reference -> Target. Each scheme's knowledge stays in its own small function."""

from __future__ import annotations

import hashlib
from pathlib import Path

from theorycraft.spec import SCHEMES, TargetRef, did_you_mean, schemes_text

from ._base import Target, TargetError, TorchTarget

WEIGHTS = Path(__file__).resolve().parent / "weights"


def load_target(ref: TargetRef | str, *, trust_code: bool = False) -> Target:
    """The target a theory names.

    Parameters
    ----------
    ref : TargetRef or str
        ``SCHEME:ADDRESS``, a scheme of ``theorycraft.spec.SCHEMES``: ``builtin:NAME``, ``hf:PATH`` (or a hub
        name in the Hugging Face cache), ``activations:DIR`` or ``torch:module:factory`` (``model:NAME``, an
        object given in Python, does not load: pass it as target=).
    trust_code : bool
        ``torch:`` targets run user code and need it.

    Returns
    -------
    Target
        A model to capture from (or a recording, for ``activations:``).
    """
    if isinstance(ref, str):
        scheme, _, address = ref.partition(":")
        ref = TargetRef(scheme, address)  # type: ignore[arg-type]
    if ref.scheme not in SCHEMES:
        raise TargetError(f"unknown target scheme '{ref.scheme}'{did_you_mean(ref.scheme, SCHEMES)}; "
                          f"expected one of: {', '.join(SCHEMES)}")
    if SCHEMES[ref.scheme].runs_code and not trust_code:
        raise TargetError(f"target '{ref}' runs your Python code; pass --trust-code (library: trust_code=True) "
                          f"if you trust it")
    return ADAPTERS[ref.scheme][0](ref.located)


def _addition() -> Target:
    from ._addition import load

    return load()


HF_BUILTINS = {"addition": _addition}  # bundled Hugging Face models, each a directory under weights/


def _builtin(name: str) -> Target:
    from safetensors.torch import load_file

    from ._builtin_models import BUILTINS

    if name in HF_BUILTINS:
        return HF_BUILTINS[name]()
    if name not in BUILTINS:
        known = [*BUILTINS, *HF_BUILTINS]
        raise TargetError(f"unknown builtin target '{name}'{did_you_mean(name, known)}; "
                          f"expected one of: {', '.join(known)}")
    spec = BUILTINS[name]
    path = WEIGHTS / f"{name}.safetensors"
    if not path.exists():
        raise TargetError(f"weights of builtin:{name} are missing at {path}; train them with "
                          f"'python examples/train_targets.py {name}'")
    module = spec.build()
    module.load_state_dict(load_file(str(path)))
    vocab = getattr(getattr(module, "embed", None), "num_embeddings", None)
    target = TorchTarget(f"builtin:{name}", module, spec.dataset, input_kind=spec.input_kind, vocab_size=vocab,
                         shifts=spec.shifts())
    target.task = spec.task
    return target


def _hugging_face(address: str) -> Target:
    from ._hf import load_hf_model

    return load_hf_model(address)


def _given_in_python(address: str) -> Target:
    raise TargetError(f"target 'model:{address}' is a model object given in Python: pass it again as target= "
                      f"(tc.infer(theory, target=model, dataset=...)); from the command line, name a target that "
                      f"loads ({schemes_text(bare=True)})")


def _user_module(address: str) -> Target:
    from ._user import load_user_module

    return load_user_module(address)


def source_identity(ref: TargetRef | str, texts: tuple[str, ...] | None = None,
                    seq_len: int | None = None) -> dict | None:
    """What a capture of ``ref`` depends on, known without loading it: the files behind it
    (path, size, mtime) and the adapter's code; None where only running it can tell (torch:
    user code, or a reference that does not resolve: loading it reports why)."""
    if isinstance(ref, str):
        scheme, _, address = ref.partition(":")
        ref = TargetRef(scheme, address)  # type: ignore[arg-type]
    files_of = ADAPTERS.get(ref.scheme, (None, None))[1]
    if files_of is None:
        return None
    files = files_of(ref.located, texts)
    if files is None:
        return None
    if seq_len is not None:  # hf: windows of another length than the default
        files["seq_len"] = seq_len
    return {"target": str(ref), "files": files}


def _stat(path: Path) -> list | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _builtin_files(name: str, texts) -> dict | None:
    if name in HF_BUILTINS:  # a model directory, its data and the adapter's code
        model = sorted(filter(None, (_stat(p) for p in (WEIGHTS / name).glob("*") if p.is_file())))
        code = [_stat(Path(__file__).with_name(f)) for f in (f"_{name}.py", "_hf.py")]
        return {"model": model, "code": code} if model else None
    weights = _stat(WEIGHTS / f"{name}.safetensors")
    code = Path(__file__).with_name("_builtin_models.py")  # the builtins' datasets are written there
    return {"weights": weights, "code": _stat(code)} if weights else None


def _hugging_face_files(address: str, texts) -> dict | None:
    import sys
    import sysconfig

    from ._hf import SEQ_LEN, local_model_path

    try:
        path = local_model_path(address)  # never a download: loading the target says what is missing
    except TargetError:
        return None
    if path is None or not (path / "config.json").is_file():
        return None
    model = sorted(filter(None, (_stat(p) for p in path.iterdir() if p.is_file())))
    corpus = (hashlib.sha256("\x00".join(texts).encode()).hexdigest() if texts is not None else
              ["stdlib docstrings", sysconfig.get_paths()["stdlib"], sys.version])
    return {"model": model, "corpus": corpus, "seq_len": SEQ_LEN, "code": _stat(Path(__file__).with_name("_hf.py"))}


def _recorded_files(address: str, texts) -> dict | None:
    directory = Path(address)
    if not (directory / "manifest.json").is_file():
        return None
    return {"recording": sorted(filter(None, (_stat(p) for p in [directory / "manifest.json",
                                                                  *directory.glob("*.npy")])))}


def _recorded(address: str) -> Target:
    from ._recorded import RecordedTarget

    return RecordedTarget(Path(address))


# each scheme of spec.SCHEMES: (its loader, the files a capture of it depends on; None where
# only running it can tell)
ADAPTERS = {"builtin": (_builtin, _builtin_files), "hf": (_hugging_face, _hugging_face_files),
            "activations": (_recorded, _recorded_files), "torch": (_user_module, None),
            "model": (_given_in_python, None)}
assert set(ADAPTERS) == set(SCHEMES), "every target scheme has its adapter here"
