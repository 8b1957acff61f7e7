"""SAELens interop: read a top-k SAE saved in SAELens's format as a ``dictionary`` component, and
write a fitted ``dictionary`` in that format.

SAELens (``SAE.save_model``) writes a directory with ``cfg.json`` and ``sae_weights.safetensors``
holding ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]`` and ``b_dec [d_in]``.
Its top-k SAE encodes ``relu(top_k((x - b_dec·apply_b_dec_to_input) @ W_enc + b_enc))`` and decodes
``codes @ W_dec + b_dec``: the same computation as a ``dictionary`` with ``k`` that reads and
predicts one site (which always centres its input on the decoder bias; an SAE that does not is
folded into its encoder bias, ``b_enc + b_dec @ W_enc``, which computes the same).

Fields of ``cfg.json`` read: ``architecture`` (``"topk"``; SAELens before 6 wrote ``"standard"``
with ``activation_fn_str: "topk"``), ``k`` (before 6: ``activation_fn_kwargs.k``), ``d_in``,
``d_sae``, ``apply_b_dec_to_input``, ``normalize_activations`` and ``reshape_activations``
(each must be ``"none"``: a normalising SAE's statistics are not in its weights), and the hook
(``metadata.hook_name``, ``meta.hook_name`` or ``hook_name``), which is only reported. The weights'
dtype is the file's; they are read as float32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from theorycraft.files import replacing, write_atomically
from theorycraft.errors import ArtifactError

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
NAMES = {"W_enc": "encoder", "b_enc": "encoder_bias", "W_dec": "decoder", "b_dec": "decoder_bias"}


class SAELensSAE(NamedTuple):
    """A top-k SAE read from SAELens's format, its parameters named as a ``dictionary``'s."""

    width: int  # d_sae
    k: int
    d_in: int
    hook: str | None  # the hook point SAELens recorded it on, if it says
    params: dict[str, np.ndarray]  # encoder [d_in, width], encoder_bias, decoder [width, d_in], decoder_bias

    def component(self, reads: str | Sequence[str], predicts: str) -> dict:
        """The ``dictionary`` component (plain data, as YAML writes it) this SAE's parameters fit.

        Parameters
        ----------
        reads : str or sequence of str
            The site (or sites) it encodes: ``from:``.
        predicts : str
            The site it reconstructs.

        Returns
        -------
        dict
            ``{kind: dictionary, from, width, k, predicts}``.
        """
        return {"kind": "dictionary", "from": reads, "width": self.width, "k": self.k, "predicts": predicts}


def read_saelens(directory) -> SAELensSAE:
    """Read a top-k SAE that SAELens saved (``SAE.save_model``) into ``directory``.

    Parameters
    ----------
    directory : str or Path
        Holds ``cfg.json`` and ``sae_weights.safetensors``.

    Returns
    -------
    SAELensSAE
        Its width, k, input width, hook and parameters. Hold them fixed in a fit with
        ``fit(theory, acts, keep={NAME: sae.params})``.

    Raises
    ------
    ArtifactError
        A missing file, an architecture other than top-k, a normalising SAE, or a weight of the
        wrong shape, each said with what was expected.
    """
    from safetensors.numpy import load_file

    directory = Path(directory)
    cfg = _read_json(directory / CFG)
    where = f"{directory / CFG}"
    activation = cfg.get("activation_fn_str") or cfg.get("activation_fn")
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if cfg.get("architecture") != "topk" and activation != "topk":
        raise ArtifactError(f"{where}: expected a top-k SAE (architecture 'topk'), found architecture "
                            f"{cfg.get('architecture')!r}; theorycraft's dictionary is top-k")
    for key in ("normalize_activations", "reshape_activations"):
        if cfg.get(key, "none") not in ("none", None):
            raise ArtifactError(f"{where}: expected {key} 'none', found {cfg[key]!r}: fold the normalisation into "
                                f"the weights first (SAELens: fold_activation_norm_scaling_factor)")
    try:
        d_in, width, k = int(cfg["d_in"]), int(cfg["d_sae"]), int(k)
    except (KeyError, TypeError, ValueError):
        raise ArtifactError(f"{where}: expected integers d_in, d_sae and k, found d_in={cfg.get('d_in')!r}, "
                            f"d_sae={cfg.get('d_sae')!r}, k={k!r}") from None
    weights = directory / WEIGHTS
    if not weights.exists():
        raise ArtifactError(f"{weights}: not found (SAELens writes the weights there beside {CFG})")
    tensors = load_file(str(weights))
    shapes = {"W_enc": (d_in, width), "b_enc": (width,), "W_dec": (width, d_in), "b_dec": (d_in,)}
    for name, shape in shapes.items():
        found = tuple(tensors[name].shape) if name in tensors else "missing"
        if found != shape:
            raise ArtifactError(f"{weights}: expected {name} of shape {list(shape)} (d_in {d_in}, d_sae {width}), "
                                f"found {found if found == 'missing' else list(found)}")
    params = {NAMES[name]: np.asarray(tensors[name], np.float32) for name in shapes}
    if not cfg.get("apply_b_dec_to_input", True):  # the dictionary always centres: fold it into the encoder bias
        params["encoder_bias"] = params["encoder_bias"] + params["decoder_bias"] @ params["encoder"]
    meta = cfg.get("metadata") or cfg.get("meta") or {}
    return SAELensSAE(width, k, d_in, meta.get("hook_name") or cfg.get("hook_name"), params)


def write_saelens(fitted, component: str, directory, *, hook: str | None = None) -> Path:
    """Write a fitted top-k ``dictionary`` that reads and predicts one site in SAELens's format.

    Parameters
    ----------
    fitted : FittedTheory
        The fitted theory holding the component.
    component : str
        The name of a ``dictionary`` component with ``k``, whose input width is its output's.
    directory : str or Path
        Where ``cfg.json`` and ``sae_weights.safetensors`` are written (created if need be).
    hook : str, optional
        The hook name to record in ``metadata.hook_name``; default the predicted site's hook.

    Returns
    -------
    Path
        ``directory``.
    """
    from safetensors.numpy import save_file

    from theorycraft.inference.kinds.dictionary import Dictionary

    spec = fitted.theory.components.get(component)
    if not isinstance(spec, Dictionary) or not spec.k:
        raise ArtifactError(f"expected the name of a top-k dictionary component of theory '{fitted.theory.name}', "
                            f"found {component!r}")
    params = {name: np.asarray(value, np.float32) for name, value in fitted.params[component].items()}
    d_in, width = params["encoder"].shape
    if params["decoder"].shape != (width, d_in):
        raise ArtifactError(f"component '{component}' reads {d_in} dimensions and predicts "
                            f"{params['decoder'].shape[1]}: SAELens's format holds an autoencoder (input width = output)")
    site = fitted.theory.sites.get(spec.predicts)
    cfg = {"architecture": "topk", "d_in": int(d_in), "d_sae": int(width), "k": int(spec.k), "dtype": "float32",
           "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
           "reshape_activations": "none",
           "metadata": {"hook_name": hook or (str(site.hook) if site is not None else None),
                        "model_name": str(fitted.theory.target)}}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with replacing(directory / WEIGHTS) as tmp:
        save_file({saelens: np.ascontiguousarray(params[ours]) for saelens, ours in NAMES.items()}, str(tmp))
    write_atomically(directory / CFG, json.dumps(cfg, indent=2) + "\n")
    return directory


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise ArtifactError(f"{path}: not found (a SAELens SAE directory holds {CFG} and {WEIGHTS})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: expected JSON, found a parse error: {exc}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data
