"""theorycraft: write a theory of a network in YAML, fit it to the network's activations, and
score it by what it predicts per bit it costs."""

from theorycraft.spec import Theory, TheoryError, check_theory, load_theory, parse_theory

__all__ = ["ActivationSet", "FittedTheory", "Kind", "Scorecard", "SearchResult", "Theory", "TheoryError", "capture",
           "check", "check_theory", "infer", "join", "load_target", "load_theory", "parse_theory", "register_kind", "report",
           "score", "search"]
__version__ = "0.1.0"

# torch and jax load only when a name that needs them is used, so `theorycraft validate` stays quick
_LAZY = {"capture": "theorycraft.api", "check": "theorycraft.api", "infer": "theorycraft.api", "join": "theorycraft.api", "search": "theorycraft.api", "ActivationSet": "theorycraft.store",
         "FittedTheory": "theorycraft.inference", "score": "theorycraft.scoring", "Scorecard": "theorycraft.scoring",
         "SearchResult": "theorycraft.refine", "load_target": "theorycraft.targets",
         "Kind": "theorycraft.inference.kinds", "register_kind": "theorycraft.inference.kinds",
         "report": "theorycraft._report"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'theorycraft' has no attribute '{name}'")
