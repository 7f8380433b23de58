"""CalcAgent: arithmetic on request (capability `calc`), for plans that need a number.

The expression is parsed with `ast` and only numbers and the arithmetic operators are
evaluated: never `eval`, so a message cannot run code, and sizes are bounded, so it cannot
make the agent compute a number with millions of digits.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from mas.actors.agent import Agent, HandlerResult
from mas.errors import Rejected
from mas.messages import Message

__all__ = ["CalcAgent", "CalcError", "evaluate"]

MAX_EXPRESSION = 1_000
"""Characters an expression may have."""
MAX_EXPONENT = 1_000
"""The largest exponent `**` takes (2 ** 1000 has 302 digits)."""
MAX_DIGITS = 1_000
"""Digits an integer along the way may have."""

_MAX_BITS = math.ceil(MAX_DIGITS * math.log2(10))

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


class CalcError(Rejected):
    """An expression that is not arithmetic, or whose value cannot be computed (rejected:
    the message is dead-lettered at once, and an asker gets the reason)."""


def evaluate(expression: object) -> int | float:
    """The value of an arithmetic expression: numbers, `+ - * / // % **` and parentheses.

    Raises:
        CalcError: not a string, too long, not arithmetic, a division by zero, or a value
            too large (an exponent over MAX_EXPONENT, an integer over MAX_DIGITS digits, a
            float that overflows).
    """
    if not isinstance(expression, str):
        raise CalcError(f"an expression is a string, like '2 * (3 + 4)', not {expression!r}")
    if len(expression) > MAX_EXPRESSION:
        raise CalcError(f"the expression has over {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalcError(f"{expression!r} is not arithmetic: {exc.msg}") from None
    value = _value(tree.body, expression)
    if isinstance(value, float) and not math.isfinite(value):
        raise CalcError(f"{expression!r} has no finite value")
    return value


def _value(node: ast.expr, expression: str) -> int | float:
    if isinstance(node, ast.Constant):
        value = node.value
        if type(value) is int or type(value) is float:
            return value
        raise CalcError(f"{expression!r}: {value!r} is not a number")
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_value(node.operand, expression)), expression)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _value(node.left, expression)
        right = _value(node.right, expression)
        if isinstance(node.op, ast.Pow):
            if abs(right) > MAX_EXPONENT:
                raise CalcError(f"{expression!r}: an exponent over {MAX_EXPONENT}")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and right > 0
                and left.bit_length() * right > _MAX_BITS  # refused before it is computed
            ):
                raise CalcError(f"{expression!r}: a number over {MAX_DIGITS} digits")
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise CalcError(f"{expression!r} divides by zero") from None
        except OverflowError:
            raise CalcError(f"{expression!r} has no finite value") from None
        if isinstance(result, complex):  # a negative number to a fractional power
            raise CalcError(f"{expression!r} has no real value")
        return _checked(result, expression)
    shown = ast.get_source_segment(expression.strip(), node) or type(node).__name__
    raise CalcError(f"{expression!r}: {shown!r} is not arithmetic (numbers and + - * / // % **)")


def _checked(value: int | float, expression: str) -> int | float:
    if isinstance(value, int) and value.bit_length() > _MAX_BITS:
        raise CalcError(f"{expression!r}: a number over {MAX_DIGITS} digits")
    return value


class CalcAgent(Agent):
    """Evaluates `{"expression": "..."}`; answers `{"expression": ..., "value": ...}`.

    An expression it cannot evaluate is rejected (`CalcError`): no retry, the agent goes on,
    a task of it ends dead-lettered with the reason, an asker gets `Rejected`.
    """

    type = "calc"
    capabilities = ("calc",)

    async def handle_message(self, message: Message) -> HandlerResult:
        expression = message.payload.get("expression")
        answer = {"expression": expression, "value": evaluate(expression)}
        return message.reply(answer)  # a task's result too, when it is a task
