"""theorycraft: write a theory of a network in YAML, fit it to the network's activations, and
score it by what it predicts per bit it costs."""

from theorycraft.spec import Theory, TheoryError, check_theory, load_theory, parse_theory

__all__ = ["Theory", "TheoryError", "check_theory", "load_theory", "parse_theory"]
__version__ = "0.1.0"
