"""Evaluation of parsed expressions (``_expr``), node by node with numpy or jax.numpy: the same
expression serves the store (numpy) and the engine (jit). With numpy, a value that is not finite
is an EvaluationError naming the expression and the first example where it happens."""

from __future__ import annotations

import ast
from typing import Any, Mapping

import numpy as np

from ._expr import BINARY, COMPARE, CONSTANTS, REDUCTIONS, EvaluationError, Expr

def position_env(tokens, xp, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Names visible to a per-position expression over ``tokens`` ``[N, T]`` (and ``variables``,
    each ``[N, T]``). ``_full`` holds what can be indexed (``token[k]``, ``x[k]``)."""
    n, t = tokens.shape
    i = xp.arange(t)[None, :]  # [1, T]
    variables = dict(variables or {})
    return {**variables, "token": tokens, "i": i, "position": i, "T": xp.asarray(t), "_shape": (n, t), "_xp": xp,
            "_full": {"token": tokens, **variables}}


def pair_env(tokens, variables: Mapping[str, Any], xp) -> dict[str, Any]:
    """Names visible to an attention rule: query position ``i``, key position ``j``."""
    return _pairs(position_env(tokens, xp, variables))


def _pairs(env: Mapping[str, Any]) -> dict[str, Any]:
    """A per-position env widened to (query i, key j) pairs: a bare variable is read at the query."""
    xp, (n, t) = env["_xp"], env["_shape"]
    full = env["_full"]
    out = {name: value[:, :, None] for name, value in full.items() if name != "token"}
    i = xp.arange(t)[None, :, None]  # [1, T_query, 1]
    out.update(token=full["token"], i=i, position=i, j=xp.arange(t)[None, None, :], T=xp.asarray(t),
               _shape=(n, t, t), _xp=xp, _full=full)
    return out


def evaluate(expr: Expr, env: Mapping[str, Any], name: str | None = None):
    """Value of ``expr`` in ``env``, broadcast to the env's full shape. With numpy a value that is
    not finite is an EvaluationError (numpy's warnings of it are not printed: the error says it);
    ``name`` is what the message calls the expression (default: its text)."""
    xp = env["_xp"]
    if xp is not np:  # traced (jax): checked where the same expression runs with numpy
        return xp.broadcast_to(xp.asarray(_eval(expr.tree.body, env)), env["_shape"])
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        try:
            value = np.broadcast_to(np.asarray(_eval(expr.tree.body, env)), env["_shape"])
        except _IntegerOverflow as overflow:
            exact = np.asarray(overflow.exact)  # over (query, key) pairs inside a reduction
            exact = np.broadcast_to(exact, np.broadcast_shapes(exact.shape, tuple(env["_shape"]) + (1,) * (exact.ndim - len(env["_shape"]))))
            where = tuple(int(k) for k in np.argwhere(np.abs(exact) >= 2 ** 31)[0])
            raise EvaluationError(f"{name or 'expression'} '{expr.text}' overflows 32-bit integers at "
                                  f"{_place(where)} (a step of it is {exact[where]:.4g});"
                                  f" expected integers below 2**31: keep products and powers small, or "
                                  f"write a float (2.0 ** x)") from None
    if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all():
        where = tuple(int(k) for k in np.argwhere(~np.isfinite(value))[0])
        raise EvaluationError(f"{name or 'expression'} '{expr.text}' is {value[where]} at {_place(where)} (the "
                              f"first of {int((~np.isfinite(value)).sum())}); expected a finite number: guard a "
                              f"division (where(x == 0, 0, 1 / x)) or keep powers small")
    return value


def _place(where: tuple) -> str:
    return f"example {where[0]}" + (f", position {where[1]}" if len(where) > 1 else "") + \
        (f", key {where[2]}" if len(where) > 2 else "")


def evaluate_variables(variables: Mapping[str, Expr], tokens, xp, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every variable over ``tokens``, in the given (dependency) order; each ``[N, T]``. A
    variable in ``given`` takes that value (an intervention) and the ones after it read it."""
    env = position_env(tokens, xp)
    values = {}
    for name, expr in variables.items():
        value = given[name] if given and name in given else evaluate(expr, env, f"variable '{name}' =")
        env[name] = env["_full"][name] = values[name] = value
    return values


def _eval(node: ast.AST, env: Mapping[str, Any]):
    xp = env["_xp"]
    if isinstance(node, ast.Constant):
        return xp.asarray(node.value)
    if isinstance(node, ast.Name):
        return xp.asarray(CONSTANTS[node.id]) if node.id in CONSTANTS else env[node.id]
    if isinstance(node, ast.Subscript):
        return _gather(env["_full"][node.value.id], _eval(node.slice, env), env["_shape"], xp)
    if isinstance(node, ast.BinOp):
        left, right = _number(_eval(node.left, env), xp), _number(_eval(node.right, env), xp)
        if isinstance(node.op, (ast.Mod, ast.FloorDiv)):  # x % 0 and x // 0 are 0, in numpy and JAX alike
            zero = right == 0
            return xp.where(zero, 0, BINARY[type(node.op)](left, xp.where(zero, 1, right)))
        integers = xp is np and np.issubdtype(np.result_type(left, right), np.integer)
        if isinstance(node.op, ast.Pow) and integers and (np.asarray(right) < 0).any():
            left = np.asarray(left, np.float64)  # numpy refuses integers to negative powers
        elif integers and not isinstance(node.op, ast.Div):  # a division's result is a float
            _check_int32(BINARY[type(node.op)](np.asarray(left, np.float64), np.asarray(right, np.float64)))
        return BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, env)
        if isinstance(node.op, ast.Not):
            return xp.logical_not(value)
        return -_number(value, xp) if isinstance(node.op, ast.USub) else _number(value, xp)
    if isinstance(node, ast.BoolOp):
        combine = xp.logical_and if isinstance(node.op, ast.And) else xp.logical_or
        result = _eval(node.values[0], env)
        for value in node.values[1:]:
            result = combine(result, _eval(value, env))
        return result
    if isinstance(node, ast.Compare):
        left, result = _eval(node.left, env), True
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, env)
            result = xp.logical_and(result, COMPARE[type(op)](left, right))
            left = right
        return result
    if isinstance(node, ast.IfExp):
        return xp.where(_eval(node.test, env), _eval(node.body, env), _eval(node.orelse, env))
    if node.func.id in REDUCTIONS:
        return _reduce(node, env)
    args = [_eval(arg, env) for arg in node.args]
    if node.func.id == "mod":
        zero = args[1] == 0
        return xp.where(zero, 0, args[0] % xp.where(zero, 1, args[1]))
    return {"abs": xp.abs, "min": xp.minimum, "max": xp.maximum,
            "where": xp.where}[node.func.id](*args)


def _reduce(node: ast.Call, env: Mapping[str, Any]):
    """``count`` / ``sum`` / ``aggregate`` over the key positions: the arguments evaluated on
    (query, key) pairs ``[N, T, T]``, reduced over the keys."""
    pairs = _pairs(env)
    xp, shape = env["_xp"], pairs["_shape"]
    args = [xp.broadcast_to(_number(xp.asarray(_eval(arg, pairs)), xp), shape) for arg in node.args[1:]]
    if node.func.id != "aggregate":
        return args[0].sum(-1)
    selected = args[0] != 0
    width = selected.sum(-1)
    total = xp.where(selected, args[1], 0).sum(-1)
    return xp.where(width > 0, total / xp.maximum(width, 1), 0.0)


class _IntegerOverflow(Exception):
    def __init__(self, exact: np.ndarray):
        self.exact = exact


def _check_int32(exact: np.ndarray) -> None:
    """The theory's expressions run in JAX with 32-bit integers, where a larger value wraps
    silently: numpy (which checks every expression first) refuses it instead."""
    if (np.abs(exact) >= 2 ** 31).any():
        raise _IntegerOverflow(exact)


def _number(value, xp):
    """Booleans count as 0/1 in arithmetic (numpy refuses ``bool - bool``)."""
    return value.astype(xp.int32) if getattr(value, "dtype", None) == bool else value


def _gather(values, index, shape, xp):
    """values ``[N, T]`` read at ``index`` (broadcast to ``shape`` = ``[N, ...]``); -1 outside."""
    n, t = values.shape
    flat = xp.broadcast_to(_number(xp.asarray(index), xp), shape).reshape(n, -1)
    inside = (flat >= 0) & (flat < t) & (flat == xp.floor(flat))
    read = xp.take_along_axis(_number(values, xp), xp.clip(flat, 0, t - 1).astype(xp.int32), axis=1)
    return xp.where(inside, read, -1).reshape(shape)
