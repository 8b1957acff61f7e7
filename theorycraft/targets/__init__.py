"""Targets: adapters that run a model and hand back the activations at named hook points.

A theory's ``target:`` selects one: ``builtin:NAME`` (bundled, trained toy models),
``hf:PATH`` (a local Hugging Face model; ``hf:minilm`` with the ``minilm`` extra),
``torch:module.path:factory`` (your own ``nn.Module``, described by a ``UserModel``; runs your
code, so only when trusted) and ``activations:DIR`` (activations recorded elsewhere). From Python,
``target=`` takes the model object itself (``as_target``: TransformerLens, nnsight, any
``nn.Module``); a theory fitted so names it ``model:CLASS``. Per-model
knowledge lives here, not in the store or the engine.
"""

from __future__ import annotations

from ._base import Target, TargetError, TorchTarget
from ._device import resolve_device
from ._hf import load_hf_model, minilm_path
from ._texts import read_texts
from ._load import load_target, source_identity
from ._objects import as_target, decoder
from ._recorded import write_recording
from ._user import UserModel

__all__ = ["resolve_device", "Target", "TargetError", "TorchTarget", "UserModel", "as_target", "decoder", "load_hf_model", "load_target",
           "minilm_path", "read_texts", "source_identity", "write_recording"]
