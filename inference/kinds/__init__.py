"""Component kinds: one module per kind holding everything it means (``_base.Kind`` lists the
hooks). They register into the one registry, which the language owns (``theorycraft.spec``'s
registry: the parser, the engine, the scorer and the search consult it); this package is
imported with ``theorycraft``, so a theory always parses against the built-in kinds.

A component's ``kind:`` is a registry key: a built-in name (``fourier``), a name registered from
Python (``theorycraft.register_kind``), or ``package.module:attr``, a Kind object in a module
that is imported only when code is trusted (``--trust-code``; library: ``trust_code=True``).

Importing this package does not import jax (see ``_base``), so the parser can.
"""

from __future__ import annotations

from theorycraft.spec import KINDS, KindError, define_kind, is_reference, kind_of, register_kind, resolve

from ._base import Example, Kind, Shapes, Start, Width
from ._check import KindCheckError, check_kind
from . import aggregate, attention, dictionary, fourier, linear, lookup, mlp, product, rule

define_kind(Kind)
for _module in (lookup, linear, fourier, rule, product, attention, aggregate, dictionary, mlp):
    register_kind(_module.__name__.rsplit(".", 1)[1], _module.KIND)

__all__ = ["KINDS", "Example", "Kind", "KindCheckError", "KindError", "Shapes", "Start", "Width", "check_kind", "is_reference", "kind_of",
           "register_kind", "resolve"]
