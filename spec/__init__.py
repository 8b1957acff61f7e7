"""The theory language: YAML theory files parsed into frozen, validated ``Theory`` objects.

Besides the parser, what other packages build on: the types a component kind's schema is written
in (``Name``, ``Expression``, ``PositiveInt``, ``NonNegativeFloat``, ``Refs``, ``list_of``), the
expression language's names, the positioned YAML reader and its messages."""

from ._axioms import OUTPUT, Place
from ._diagnostics import Diagnostic, TheoryError, describe, did_you_mean
from ._evaluate import evaluate, evaluate_variables, pair_env, position_env
from ._expr import PAIR_NAMES, POSITION_NAMES, EvaluationError, Expr, ExprError, parse_expr, random_offsets
from ._model import (SCHEMES, ComponentSpec, Expression, HookPoint, Name, NonNegativeFloat, PositiveInt, Refs, Scheme,
                     Site, TargetRef, list_of, schemes_text)
from ._registry import KINDS, KindError, define_kind, is_reference, kind_of, register_kind, resolve
from ._parse import check_theory, declare_inputs, load_theory, parse_theory
from ._outline import feature_width, outline, parameter_shapes
from ._schema import json_schema
from ._theory import Theory, walk_reads
from ._validate import validate_component
from ._vocabulary import VOCABULARY_KEYS, Grammar, each_items
from ._yaml import SourceMap, dump, load_yaml, read_limited

__all__ = ["Diagnostic", "EvaluationError", "Expr", "ExprError", "ComponentSpec", "HookPoint", "Site", "TargetRef", "Theory",
           "TheoryError", "check_theory", "declare_inputs", "evaluate", "evaluate_variables", "feature_width", "json_schema", "load_theory",
           "outline", "pair_env", "parameter_shapes", "parse_expr", "parse_theory", "position_env",
           # the types a kind's schema is written in
           "Expression", "Name", "NonNegativeFloat", "PositiveInt", "Refs", "list_of",
           # the expression language's names
           "PAIR_NAMES", "POSITION_NAMES", "random_offsets",
           # positioned YAML and messages, theories' reads, axioms' places
           "OUTPUT", "Place", "SourceMap", "describe", "did_you_mean", "dump", "load_yaml", "read_limited",
           "validate_component", "walk_reads",
           # the search vocabulary language
           "VOCABULARY_KEYS", "Grammar", "each_items",
           # the registry of component kinds (the kinds register into it)
           "KINDS", "KindError", "define_kind", "is_reference", "kind_of", "register_kind", "resolve",
           # the one table of target schemes
           "SCHEMES", "Scheme", "schemes_text"]
