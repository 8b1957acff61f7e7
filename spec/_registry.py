"""The one registry of component kinds, which the language owns: the parser, the outline and the
JSON Schema look a component's ``kind:`` up here, and the engine, the scorer and the search read
the same entries. The kinds register into it (``theorycraft.inference.kinds``, imported with the
``theorycraft`` package, adds the built-ins and says what a kind is), so spec imports no kind.

A ``kind:`` is a registry key: a built-in name (``fourier``), a name registered from Python
(``theorycraft.register_kind``), or ``package.module:attr``, a Kind object in a module that is
imported only when code is trusted (``--trust-code``; library: ``trust_code=True``).
"""

from __future__ import annotations

import importlib
import re
from typing import Any

KINDS: dict[str, Any] = {}  # name -> kind
_REFERENCE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_kind_type: type | None = None  # what a kind is: the kinds' ``Kind`` class, given by ``define_kind``


class KindError(ValueError):
    """A ``kind:`` that names no usable kind; the message says why and what to do."""


def define_kind(kind_type: type) -> None:
    """Say what a kind is (the class every kind is an instance of), before kinds register."""
    global _kind_type
    _kind_type = kind_type


def is_kind(value: object) -> bool:
    return _kind_type is not None and isinstance(value, _kind_type)


def register_kind(name: str, kind):
    """Make ``kind`` available to theories as ``kind: NAME``. Re-registering a name replaces it.

    Parameters
    ----------
    name : str
        Letters, digits and '_' (or ``module:attr``).
    kind : Kind
        The kind (``theorycraft.inference.kinds.Kind``): its schema and its init/apply pair.

    Returns
    -------
    Kind
        ``kind``, so that this can decorate.
    """
    if not is_kind(kind):
        raise TypeError(f"expected a theorycraft Kind instance for kind '{name}', found {type(kind).__name__}")
    if not (isinstance(name, str) and (re.match(r"^[A-Za-z][A-Za-z0-9_]*$", name) or _REFERENCE.match(name))):
        raise ValueError(f"expected a kind name of letters, digits and '_' (or 'module:attr'), found {name!r}")
    KINDS[name] = kind
    return kind


def is_reference(name: str) -> bool:
    """``package.module:attr``: a kind defined in Python, loaded by importing its module."""
    return bool(_REFERENCE.match(name))


def resolve(name: str, *, trust_code: bool = False):
    """The kind a component names. A ``module:attr`` kind is Python code: it is imported (once)
    and used only when ``trust_code``, at every use (imported with trust earlier in the process
    is no trust now); otherwise nothing runs and KindError says why."""
    if name in KINDS and not is_reference(name):
        return KINDS[name]
    if not is_reference(name):
        raise KindError(f"unknown component kind '{name}'")
    if not trust_code:
        raise KindError(f"component kind '{name}' is Python code (module '{name.split(':')[0]}'); "
                        f"pass --trust-code (library: trust_code=True) to import it if you trust it")
    if name in KINDS:
        return KINDS[name]
    module, _, attr = name.partition(":")
    try:
        kind = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise KindError(f"cannot import module '{module}' of component kind '{name}': {exc}") from None
    except AttributeError:
        raise KindError(f"module '{module}' has no '{attr}' (component kind '{name}')") from None
    if isinstance(kind, type) and _kind_type is not None and issubclass(kind, _kind_type):
        kind = kind()
    if not is_kind(kind):
        raise KindError(f"'{name}' is a {type(kind).__name__}; expected a theorycraft Kind (a subclass or an instance)")
    return register_kind(name, kind)


def kind_of(component):
    """The registered kind of a parsed component (or of a kind name)."""
    return KINDS[component if isinstance(component, str) else component.kind]
