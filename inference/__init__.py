"""The JAX engine: component kinds (init/apply pairs), theory -> predict function, fitting."""

from ._fitted import FittedTheory
from ._compile import Plan, make_plan
from ._fit import FitConfig, fit
from ._kinds import KINDS, Kind, Shapes, register

__all__ = ["FitConfig", "FittedTheory", "KINDS", "Kind", "Plan", "Shapes", "fit", "make_plan", "register"]
