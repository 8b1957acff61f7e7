"""The theory language: YAML theory files parsed into frozen, validated ``Theory`` objects."""

from ._diagnostics import Diagnostic, TheoryError
from ._expr import EvaluationError, Expr, ExprError, evaluate, evaluate_variables, pair_env, parse_expr, position_env
from ._model import SCHEMES, ComponentSpec, HookPoint, Scheme, Site, TargetRef, schemes_text
from ._parse import check_theory, declare_inputs, load_theory, parse_theory
from ._outline import feature_width, outline, parameter_shapes
from ._schema import json_schema
from ._theory import Theory

__all__ = ["Diagnostic", "EvaluationError", "Expr", "ExprError", "ComponentSpec", "HookPoint", "SCHEMES", "Scheme", "Site", "TargetRef", "schemes_text", "Theory",
           "TheoryError", "check_theory", "declare_inputs", "evaluate", "evaluate_variables", "feature_width", "json_schema", "load_theory",
           "outline", "pair_env", "parameter_shapes", "parse_expr", "parse_theory", "position_env"]
