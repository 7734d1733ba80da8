"""Stage 2 (compiler): elaboration of function calls — the program's `def` helpers and the built-ins.

A `def` computes numbers only: its parameters are bound to the arguments in a
frame of its own (it sees its parameters, other helpers and the built-in
functions, no tensors), it may not recurse, directly or through others, and all
its calls together are bounded (`MAX_FUNCTION_CALLS`). The built-in functions
are expressions.py's, but for `max` and `min` of tensors (tensor_expressions.py).
`FunctionCalls` is a part of the `Elaborator` (elaborate.py): `self` is the
elaborator, whose evaluation and frames it uses.
"""
from __future__ import annotations

from typing import Any

from ..dsl import ast
from ..dsl.source import CnncError, Loc, did_you_mean
from .attrs import describe
from .expressions import builtin_function
from .naming import Frame, Scope, Tensor
from .symbolic import Dim

MAX_FUNCTION_CALLS = 100_000  # `def` helpers build nothing, so their calls are bounded on their own


class FunctionCalls:
    """The elaborator's calls of functions: built-in ones and the program's `def` helpers."""

    def _function(self, expr: ast.Call, frame: Frame) -> Any:
        args = [self.ev(a, frame) for a in expr.args]
        if expr.func in ("max", "min") and any(isinstance(a, Tensor) for a in args) and not expr.kwargs:
            return self._tensor_extremum(expr, args, frame)
        return builtin_function(expr, args, self.defs.blocks)

    def _user_function(self, fn: ast.Function, expr: ast.Call, frame: Frame) -> Any:
        """The value of a `def` helper: its parameters bound to the arguments, its body run in a frame
        of its own (it sees its parameters, other helpers and the built-in functions, no tensors)."""
        if fn.name in self.function_stack:
            path = " -> ".join([*self.function_stack[self.function_stack.index(fn.name):], fn.name])
            raise CnncError(f"numeric function '{fn.name}' calls itself ({path})", expr.loc,
                            "a `def` cannot recurse, directly or through other functions: "
                            "write the formula without the recursive call")
        self.function_calls += 1
        if self.function_calls > MAX_FUNCTION_CALLS:
            raise CnncError(f"numeric functions were called more than {MAX_FUNCTION_CALLS:,} times", expr.loc,
                            "a function that calls others several times multiplies the work: bind a value once "
                            "and reuse it")
        values = self._function_args(fn, expr, frame)
        inner = Frame({}, Scope(None), False, fn.name)
        for p in fn.params:
            inner.env[p.name] = self._param_value(
                p, values, inner, lambda p: CnncError(f"function '{fn.name}' needs its parameter '{p.name}'",
                                                      expr.loc, f"'{fn.name}' is defined at {fn.loc}"))
        self.function_stack.append(fn.name)
        try:
            value = None
            for stmt in fn.body:
                value = self.statement(stmt, inner)
        except CnncError as err:
            if len(err.diagnostic.notes) < 12:
                err.add_note(f"in function '{fn.name}', called here", expr.loc)
            raise
        finally:
            self.function_stack.pop()
        if not isinstance(value, (bool, int, float, Dim, tuple)):
            raise CnncError(f"function '{fn.name}' must give a number, but its last statement gives "
                            f"{describe(value)}", fn.body[-1].loc if fn.body else fn.loc) \
                .add_note(f"in function '{fn.name}', called here", expr.loc)
        return value

    def _function_args(self, fn: ast.Function, expr: ast.Call, frame: Frame) -> dict[str, Any]:
        names = [p.name for p in fn.params]
        if len(expr.args) > len(names):
            raise CnncError(f"function '{fn.name}' takes {len(names)} arguments, got {len(expr.args)}",
                            expr.args[len(names)].loc, f"defined at {fn.loc}")
        given = [(p.name, e) for p, e in zip(fn.params, expr.args)]
        for kw in expr.kwargs:
            if kw.name not in names:
                raise CnncError(f"function '{fn.name}' has no parameter '{kw.name}'", kw.loc,
                                did_you_mean(kw.name, names, f"its parameters: {', '.join(names) or 'none'}"))
            if kw.name in dict(given):
                raise CnncError(f"parameter '{kw.name}' of function '{fn.name}' is given twice", kw.loc)
            given.append((kw.name, kw.value))
        values = {}
        for name, e in given:
            v = self.ev(e, frame)
            if isinstance(v, Tensor):
                raise CnncError(f"function '{fn.name}' takes numbers, got a tensor for '{name}'", e.loc,
                                "pass a size instead, e.g. channels(t)")
            values[name] = v
        return values

    def _refuse_layers_in_function(self, what: str, loc: Loc) -> None:
        if self.function_stack:
            raise CnncError(f"numeric function '{self.function_stack[-1]}' cannot apply '{what}'", loc,
                            "a `def` computes numbers only; build layers in a block")
