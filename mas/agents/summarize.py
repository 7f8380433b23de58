"""SummarizeAgent: an extractive summary of a text (capability `summarize`), no model needed.

It keeps the sentences whose words recur most in the text, in their order: a deterministic
stand-in for a model-backed summarizer, so that plans using `summarize` run (and are tested)
offline. An agent that calls a model can offer the same capability instead.
"""

from __future__ import annotations

import re
from collections import Counter

from mas.actors.agent import Agent, HandlerResult
from mas.errors import Rejected
from mas.messages import Message

__all__ = ["SummarizeAgent", "summarize"]

MAX_TEXT = 200_000
"""Characters a text may have."""

_SENTENCE = re.compile(r"[^.!?]+(?:[.!?]+|$)")
_WORD = re.compile(r"[^\W\d_]{3,}")
_COMMON = frozenset(  # words too common to say what a sentence is about
    """the and for are but not you all any can had her was one our out has him his how its
    may new now old see two who did get let put say she too use that with have this will
    your from they been were when what which their there would about into than then them
    these some could other more also only over such""".split()  # noqa: SIM905
)


def summarize(text: object, sentences: object = 2) -> str:
    """The `sentences` sentences of `text` that score highest (the sum of their words'
    frequencies in the text, common words left out, over the sentence's length), in order.

    Raises:
        Rejected: `text` is not a string (or is too long), `sentences` not a whole number
            from 1 to 50.
    """
    if not isinstance(text, str):
        raise Rejected(f"a text to summarize is a string, not {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise Rejected(f"the text has over {MAX_TEXT} characters")
    if type(sentences) is not int or not 1 <= sentences <= 50:
        raise Rejected(f"sentences is a whole number from 1 to 50, not {sentences!r}")
    found = [s.strip() for s in _SENTENCE.findall(text) if s.strip()]
    if len(found) <= sentences:
        return " ".join(found)
    counts = Counter(w for w in _WORD.findall(text.lower()) if w not in _COMMON)

    def score(sentence: str) -> float:
        words = [w for w in _WORD.findall(sentence.lower()) if w not in _COMMON]
        return sum(counts[w] for w in words) / (len(words) + 1)

    ranked = sorted(range(len(found)), key=lambda i: (-score(found[i]), i))[:sentences]
    return " ".join(found[i] for i in sorted(ranked))


class SummarizeAgent(Agent):
    """Summarizes `{"text": ..., "sentences": 2}`; answers `{"summary": ...}`."""

    type = "summarize"
    capabilities = ("summarize",)

    async def handle_message(self, message: Message) -> HandlerResult:
        payload = message.payload
        answer = {"summary": summarize(payload.get("text"), payload.get("sentences", 2))}
        return message.reply(answer)  # a task's result too, when it is a task
