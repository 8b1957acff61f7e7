"""The safe expression language of variables, rules and attention patterns.

An expression is parsed by Python's ``ast`` (parsing never runs code) and accepted only if every
node is on a short whitelist; it is then evaluated node by node with numpy or jax.numpy, so one
expression serves both the store (numpy) and the engine (jit). Semantics:

- ``token`` is the input, ``[N, T]`` integer ids; ``token[k]`` reads position ``k`` of every
  sequence, and ``k`` may depend on the current position (``token[i - 1]``). A position outside
  the sequence reads as ``-1``. Any variable is indexed the same way (``x[i - 1]``, ``x[j]``).
- ``i`` (alias ``position``) is the current position; ``j`` the key position inside an attention
  rule or a reduction; ``T`` the sequence length.
- Reductions over the key positions ``j`` of the same sequence (all of them, 0 to T - 1):
  ``count(j: COND)`` (how many keys a rule selects: selector width), ``sum(j: EXPR)`` and
  ``aggregate(j: COND, VALUE)`` (the mean of VALUE over the keys where COND holds, 0 where none
  does: RASP's aggregate of a select). Inside, a bare variable is read at the query ``i``;
  ``x[j]`` at the key.
- Arithmetic ``+ - * / // % **`` (``x % 0`` and ``x // 0`` are 0), comparisons (chainable), ``and or not``, ``x if c else y``, and
  the functions in FUNCTIONS. Results broadcast to ``[N, T]`` (``[N, T, T]`` for attention).
- What cannot be evaluated is refused: at parse time where the text proves it (a literal
  exponent that is negative or not an integer, a division by the literal 0), and when evaluated
  with numpy a value that is not finite (``1 / x`` where ``x`` is 0, an overflow) is an
  EvaluationError naming the expression and the first example where it happens.
"""

from __future__ import annotations

import ast
import copy
import operator
import re
from dataclasses import dataclass, field
from typing import Mapping


POSITION_NAMES = frozenset({"token", "i", "position", "T", "true", "false"})
PAIR_NAMES = POSITION_NAMES | {"j"}  # attention rules also see the key position
FUNCTIONS = {"mod": 2, "abs": 1, "min": 2, "max": 2, "where": 3}
REDUCTIONS = {"count": 1, "sum": 1, "aggregate": 2}  # arguments after ``j:``
CONSTANTS = {"true": True, "false": False}  # YAML's spelling, besides Python's True / False
INDEX_NAMES = frozenset({"i", "position", "T", "j"})  # positions, not values: never indexed
_REDUCTION_HEAD = re.compile(r"\b([A-Za-z_]\w*)(\s*\(\s*[A-Za-z_]\w*\s*):")  # f(x: ...), e.g. count(j: ...)
MAX_LENGTH = 1000

BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
            ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_UNARY = (ast.USub, ast.UAdd, ast.Not)
_NAMED_REJECTS = {ast.Attribute: "attribute access", ast.Lambda: "lambda", ast.ListComp: "a comprehension",
                  ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
                  ast.GeneratorExp: "a comprehension", ast.NamedExpr: "assignment (:=)",
                  ast.Starred: "unpacking (*)", ast.JoinedStr: "an f-string", ast.Await: "await",
                  ast.Yield: "yield", ast.YieldFrom: "yield", ast.Dict: "a dict", ast.Set: "a set",
                  ast.List: "a list", ast.Tuple: "a tuple", ast.Slice: "a slice"}


class ExprError(ValueError):
    """An expression that is not in the language; ``offset`` is 0-based inside the text."""

    def __init__(self, message: str, offset: int = 0):
        super().__init__(message)
        self.message = message
        self.offset = offset


class EvaluationError(Exception):
    """An expression whose value is not a finite number on some example (a division by zero, an
    overflow); the message names the expression and the first example index."""


@dataclass(frozen=True)
class Expr:
    """A checked expression. Equal when the text is equal; ``names`` are its free names."""

    text: str
    names: tuple[tuple[str, int], ...] = field(compare=False)  # (name, 0-based offset); a reduction's j is bound
    tree: ast.Expression = field(compare=False, repr=False)
    reductions: tuple[tuple[str, int], ...] = field(default=(), compare=False)  # (function, offset)

    def __str__(self) -> str:
        return self.text


def _offset(text: str, node: ast.AST) -> int:
    """0-based character offset of ``node`` in ``text`` (ast gives lines and UTF-8 byte columns)."""
    lines = text.split("\n")
    before = sum(len(line) + 1 for line in lines[: node.lineno - 1])
    line = lines[node.lineno - 1].encode()
    return before + len(line[: node.col_offset].decode(errors="ignore"))


def parse_expr(text: object) -> Expr:
    """Parse and check ``text``; raises ExprError naming what is not allowed and where."""
    if isinstance(text, bool) or isinstance(text, (int, float)):
        text = str(text)
    if not isinstance(text, str):
        raise ExprError(f"expected an expression (text), found {type(text).__name__}")
    if not text.strip():
        raise ExprError("expected an expression, found empty text")
    control = next((k for k, c in enumerate(text) if (c < " " and c not in "\n\t") or c == "\x7f"), None)
    if control is not None:
        raise ExprError(f"expected printable text, found the control character {text[control]!r}", control)
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expected an expression of at most {MAX_LENGTH} characters, found {len(text)}")
    # ``count(j: ...)`` is not Python: the colon becomes a comma (same length, so every offset
    # stays true) and the reduction is parsed as a call whose first argument is ``j``
    python = _REDUCTION_HEAD.sub(lambda m: m[0] if m[1] in FUNCTIONS else m[1] + m[2] + ",", text)
    try:
        tree = ast.parse(python.strip("\n"), mode="eval")
    except SyntaxError as exc:
        lines = text.split("\n")
        line_start = sum(len(line) + 1 for line in lines[: (exc.lineno or 1) - 1])
        # Python reports offset 0 when the text ends too early: point just past the end
        column = exc.offset - 1 if exc.offset else len(lines[(exc.lineno or 1) - 1].rstrip())
        reason = (exc.msg or "invalid syntax").replace("invalid syntax. ", "")
        raise ExprError(f"invalid expression: {reason}", line_start + column) from None
    except (ValueError, RecursionError, MemoryError):
        raise ExprError("invalid expression: nested too deeply or contains a null byte") from None
    names: list[tuple[str, int]] = []
    reductions: list[tuple[str, int]] = []
    try:
        _check(tree.body, text, names, reductions)
    except RecursionError:
        raise ExprError("invalid expression: nested too deeply") from None
    return Expr(text, tuple(names), tree, tuple(reductions))


def _check(node: ast.AST, text: str, names: list, reductions: list, bound: bool = False) -> None:
    """Whitelist ``node``; ``bound``: inside a reduction, where ``j`` is the reduction's own."""
    def reject(what: str, at: ast.AST = node) -> None:
        raise ExprError(what, _offset(text, at))

    def check(child: ast.AST) -> None:
        _check(child, text, names, reductions, bound)

    if isinstance(node, ast.Constant):
        if isinstance(node.value, (bool, int, float)):
            return
        reject(f"expected a number or true/false, found the constant {node.value!r}")
    if isinstance(node, ast.Name):
        if node.id.startswith("_"):
            reject(f"names starting with '_' are not allowed, found '{node.id}'")
        if node.id == "token":
            reject("'token' is the whole input: read one position as token[k], e.g. token[i]")
        if node.id in CONSTANTS:
            return
        if node.id in FUNCTIONS or node.id in REDUCTIONS:
            reject(f"'{node.id}' is a function: call it as {node.id}(...)")
        if not (bound and node.id == "j"):
            names.append((node.id, _offset(text, node)))
        return
    if isinstance(node, ast.Subscript):
        if not isinstance(node.value, ast.Name) or node.value.id in INDEX_NAMES | set(CONSTANTS) \
                or node.value.id.startswith("_"):
            reject("only 'token' and variables can be indexed, as token[k] or x[i - 1]")
        names.append((node.value.id, _offset(text, node.value)))
        return check(node.slice)
    if isinstance(node, ast.Call):
        return _check_call(node, text, names, reductions, bound)
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        check(node.left)
        check(node.right)
        literal = _literal(node.right)
        if isinstance(node.op, ast.Pow) and literal is not None and (literal < 0 or literal != int(literal)):
            reject(f"expected a non-negative integer exponent, found {ast.unparse(node.right)} (for a "
                   f"reciprocal write 1 / x)", node.right)
        if isinstance(node.op, ast.Div) and literal == 0:
            reject(f"expected a divisor that is not 0, found {ast.unparse(node.right)} (x / 0 is not a number; "
                   f"x // 0 and x % 0 are 0)", node.right)
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, _UNARY):
        return check(node.operand)
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            check(value)
        return
    if isinstance(node, ast.Compare) and all(type(op) in COMPARE for op in node.ops):
        for part in (node.left, *node.comparators):
            check(part)
        return
    if isinstance(node, ast.IfExp):
        for part in (node.test, node.body, node.orelse):
            check(part)
        return
    what = _NAMED_REJECTS.get(type(node), f"'{type(node).__name__}' syntax")
    if isinstance(node, (ast.BinOp, ast.Compare)):
        what = "that operator"
    reject(f"{what} is not allowed in expressions")


def _literal(node: ast.AST) -> float | None:
    """The number a literal operand spells (``2``, ``-1``, ``0.5``), or None for anything else."""
    sign = 1
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign, node = (-sign if isinstance(node.op, ast.USub) else sign), node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float)):
        return sign * node.value
    return None


def _check_call(node: ast.Call, text: str, names: list, reductions: list, bound: bool) -> None:
    """A function call, or a reduction over keys: ``count(j: COND)`` (parsed as ``count(j, COND)``)."""
    def reject(what: str, at: ast.AST = node) -> None:
        raise ExprError(what, _offset(text, at))

    name = node.func.id if isinstance(node.func, ast.Name) else None
    if name not in FUNCTIONS and name not in REDUCTIONS:
        allowed = ", ".join(sorted(FUNCTIONS) + [f"{r}(j: ...)" for r in REDUCTIONS])
        reject(f"unknown function '{name or ast.unparse(node.func)}' (allowed: {allowed})")
    if node.keywords:
        reject(f"{name}() takes no keyword arguments", node.keywords[0].value)
    if name in REDUCTIONS:
        usage = {"count": "count(j: CONDITION)", "sum": "sum(j: VALUE)", "aggregate": "aggregate(j: CONDITION, VALUE)"}[name]
        if not (node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "j"):
            reject(f"{name} ranges over the key positions j: write {usage}")
        if len(node.args) - 1 != REDUCTIONS[name]:
            reject(f"expected {usage}, found {len(node.args) - 1} argument{'s' * (len(node.args) != 2)} after 'j:'")
        if bound:
            reject(f"{name}(j: ...) cannot be nested inside another reduction over j")
        reductions.append((name, _offset(text, node)))
        for arg in node.args[1:]:
            _check(arg, text, names, reductions, True)
        return
    want = FUNCTIONS[name]
    if len(node.args) != want:
        reject(f"{name}() expects {want} argument{'s' * (want > 1)}, found {len(node.args)}")
    for arg in node.args:
        _check(arg, text, names, reductions, bound)


def random_offsets(text: str, rng, positions_only: bool = False) -> str:
    """The same expression with each offset constant drawn anew (``j == i - 1`` -> ``j == i - 4``):
    the benchmark's random baseline of a rule over positions. ``positions_only``: only offsets
    added to a position (``i - 1``, ``j + 2``), not other arithmetic."""
    pattern = r"(?<=\b[ij] [-+] )\d+" if positions_only else r"(?<=[-+] )\d+"
    return re.sub(pattern, lambda m: str(int(rng.integers(2, 7))), text)


def renamed(expr: Expr, names: Mapping[str, str]) -> str:
    """``expr`` with its free names replaced as ``names`` says (others kept), spelled one way
    (Python's unparse): spacing and redundant parentheses are not part of what it says."""
    tree = copy.deepcopy(expr.tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in names:
            node.id = names[node.id]
    return ast.unparse(tree)
