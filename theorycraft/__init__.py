"""theorycraft: write a theory of a network in YAML, fit it to the network's activations, and
score it by what it predicts per bit it costs."""

from typing import TYPE_CHECKING

from theorycraft.spec import Theory, TheoryError, check_theory, load_theory, parse_theory
from theorycraft.inference import kinds as _kinds  # the built-in kinds register into the language's registry

if TYPE_CHECKING:  # what type checkers and IDEs see of the lazy names below
    from theorycraft._report import report
    from theorycraft.api import capture, check, infer, join, search
    from theorycraft.configs import CaptureConfig, FitConfig, ScoreConfig, SearchConfig
    from theorycraft.inference import FittedTheory
    from theorycraft.inference.kinds import Kind, check_kind, register_kind
    from theorycraft.refine import SearchResult
    from theorycraft.saelens import read_saelens, write_saelens
    from theorycraft.scoring import Scorecard, score
    from theorycraft.store import ActivationSet
    from theorycraft.targets import load_target

__all__ = ["ActivationSet", "CaptureConfig", "FitConfig", "FittedTheory", "Kind", "ScoreConfig", "Scorecard",
           "SearchConfig", "SearchResult", "Theory", "TheoryError", "capture", "check", "check_kind", "check_theory",
           "infer", "join", "load_target", "load_theory", "parse_theory", "read_saelens", "register_kind", "report",
           "score", "search", "write_saelens"]
__version__ = "0.1.0"

# torch and jax load only when a name that needs them is used, so `theorycraft validate` stays quick
_LAZY = {"capture": "theorycraft.api", "check": "theorycraft.api", "infer": "theorycraft.api", "join": "theorycraft.api", "search": "theorycraft.api", "ActivationSet": "theorycraft.store",
         "FittedTheory": "theorycraft.inference", "score": "theorycraft.scoring", "Scorecard": "theorycraft.scoring",
         "SearchResult": "theorycraft.refine", "load_target": "theorycraft.targets",
         "Kind": "theorycraft.inference.kinds", "check_kind": "theorycraft.inference.kinds",
         "register_kind": "theorycraft.inference.kinds",
         "read_saelens": "theorycraft.saelens", "report": "theorycraft._report", "write_saelens": "theorycraft.saelens",
         **dict.fromkeys(("CaptureConfig", "FitConfig", "ScoreConfig", "SearchConfig"), "theorycraft.configs")}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'theorycraft' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
