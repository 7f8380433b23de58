"""CalcAgent and SummarizeAgent: the capabilities the example plans use."""

from __future__ import annotations

import pytest

from mas import Message, Rejected
from mas.agents.calc import CalcAgent, CalcError, evaluate
from mas.agents.summarize import SummarizeAgent, summarize
from mas.testing import TestRuntime

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 * (3 + 4)", 14),
        ("1 / 4", 0.25),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("-2 ** 2", -4),
        ("2 ** 10", 1024),
        ("+1.5e3", 1500.0),
    ],
)
def test_arithmetic_is_evaluated(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ('__import__("os").system("true")', "is not arithmetic"),
        ("x + 1", "is not arithmetic"),
        ("(1).real", "is not arithmetic"),
        ("[1, 2]", "is not arithmetic"),
        ("True + 1", "is not a number"),
        ("'a' * 3", "is not a number"),
        ("1 / 0", "divides by zero"),
        ("2 ** 1001", "an exponent over 1000"),
        ("(10 ** 999) ** 1000", "over 1000 digits"),
        ("10 ** 999 * 10 ** 999", "over 1000 digits"),
        ("1e308 * 10", "no finite value"),
        ("(-8) ** 0.5", "no real value"),
        ("2 +", "is not arithmetic"),
        ("1" * 1001, "over 1000 characters"),
    ],
)
def test_anything_but_bounded_arithmetic_is_refused_saying_why(expression: str, why: str) -> None:
    with pytest.raises(CalcError, match=why):
        evaluate(expression)


def test_an_expression_is_a_string() -> None:
    with pytest.raises(CalcError, match="is a string"):
        evaluate(12)


TEXT = (
    "Tides are caused by the moon. Cats like fish. The moon pulls the oceans toward it. "
    "The pull of the moon on the oceans makes the tides rise and fall twice a day."
)


def test_a_summary_keeps_the_sentences_about_what_the_text_is_about_in_order() -> None:
    assert summarize(TEXT, 2) == (
        "Tides are caused by the moon. The moon pulls the oceans toward it."
    )
    assert summarize("One sentence only.", 3) == "One sentence only."


@pytest.mark.parametrize(("text", "sentences"), [(None, 2), ("ok", 0), ("ok", 51), ("ok", True)])
def test_a_summary_refuses_what_is_not_a_text_or_a_count(text: object, sentences: object) -> None:
    with pytest.raises(Rejected):
        summarize(text, sentences)


async def test_the_agents_answer_by_capability() -> None:
    async with TestRuntime() as rt:
        await rt.spawn(CalcAgent, id="calc")
        await rt.spawn(SummarizeAgent, id="summarize")
        value = await rt.ask("capability:calc", Message("calc", {"expression": "6*7"}), timeout=5)
        summary = await rt.ask(
            "capability:summarize", Message("summarize", {"text": TEXT, "sentences": 1}), timeout=5
        )
        with pytest.raises(Rejected, match="agent 'calc' rejected the message: CalcError: "):
            await rt.ask("capability:calc", Message("calc", {"expression": "1/0"}), timeout=5)
    assert value.payload == {"expression": "6*7", "value": 42}
    assert summary.payload == {"summary": "Tides are caused by the moon."}
