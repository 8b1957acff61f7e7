"""The JAX engine: component kinds (``kinds/``, one module each), theory -> predict function, fitting.
Other packages use it through ``theorycraft.inference.engine``, its one public interface.

Names load on first use, so that the parser can import ``theorycraft.inference.kinds`` (the
kinds' schemas) without importing jax and optax."""

__all__ = ["FitConfig", "FittedTheory", "KINDS", "Kind", "Plan", "Shapes", "fit", "make_plan", "register_kind"]
_LAZY = {"FittedTheory": "._fitted", "Plan": "._compile", "make_plan": "._compile",
         "FitConfig": "._fit", "fit": "._fit", "KINDS": ".kinds", "Kind": ".kinds", "Shapes": ".kinds",
         "register_kind": ".kinds"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'theorycraft.inference' has no attribute '{name}'")
