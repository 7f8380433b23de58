"""A long `ctx.ask` parks its handler like a long sleep: the agent takes other messages, and
the commit that records the answer wakes the handler at once (on whichever node answers),
or its deadline does. The ask is not asked again, its timeout is not restarted, and the
steps before it do not run again.

SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from mas import Agent, Message, Runtime
from mas.actors.workflow import ASKS_KEY, WAKES_KEY, Wait
from mas.config import OutboxSettings, WorkflowSettings
from mas.errors import AskTimeout, MasError
from mas.messages import derived_id
from mas.persistence import Batch, StoreJournal
from mas.testing import eventually
from tests.unit.persistence.databases import Database

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("store")]  # migrated

effects: Counter[str] = Counter()


def count(name: str) -> str:
    effects[name] += 1
    return name


class Slow(Agent):
    """Answers once `release` is set (a person, a long model call)."""

    type = "slow"
    release: ClassVar[asyncio.Event]

    async def handle_message(self, message: Message) -> Message:
        effects["asked"] += 1
        await type(self).release.wait()
        return message.reply({"answer": message.payload["n"] * 2})


class Asker(Agent):
    """A step, a long ask (or several at once), another step; answers pings meanwhile."""

    type = "asker"
    finished: ClassVar[asyncio.Event]
    outcome: ClassVar[Any] = None

    async def handle_message(self, message: Message) -> Message | None:
        if message.type == "ping":
            return message.reply({"pong": True})
        ctx = self.ctx
        await ctx.step("before", count, "before")
        timeout = float(message.payload["timeout"])
        try:
            to = message.payload.get("to", "type:slow")
            replies = await ctx.gather(
                *[
                    ctx.ask(to, Message("q", {"n": n}), timeout=timeout)
                    for n in range(int(message.payload.get("asks", 1)))
                ]
            )
            outcome: Any = [reply.payload["answer"] for reply in replies]
        except AskTimeout as exc:
            outcome = f"timed out after {exc.timeout}s"
        except MasError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        await ctx.step("after", count, "after")
        type(self).outcome = outcome
        type(self).finished.set()
        return None


class Failing(Agent):
    """Fails every question once `go` is set (each attempt counted)."""

    type = "failing"
    max_attempts = 2
    go: ClassVar[asyncio.Event]

    async def handle_message(self, message: Message) -> None:
        await type(self).go.wait()
        effects["failed"] += 1
        raise RuntimeError("cannot answer (test)")


class Woken(Agent):
    """Keeps the wake-ups it gets (what the journal sent to wake a parked handler)."""

    type = "woken"
    got: ClassVar[asyncio.Queue[Message]]

    async def handle_message(self, message: Message) -> None:
        type(self).got.put_nowait(message)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    effects.clear()
    Slow.release = asyncio.Event()
    Failing.go = asyncio.Event()
    Asker.finished = asyncio.Event()
    Asker.outcome = None
    Woken.got = asyncio.Queue()


def _settings(db: Database, *, sweep_interval: float = 60.0) -> Any:
    # Sweeps a minute apart: only a pushed wake-up is in time (a timer still fires, late).
    return db.settings(
        workflow=WorkflowSettings(park_after=0.1),
        outbox=OutboxSettings(lease=2.0, sweep_interval=sweep_interval),
    )


async def _spawned(rt: Runtime) -> None:
    await rt.spawn(Slow, id="slow")
    await rt.spawn(Asker, id="asker")


async def test_a_long_ask_frees_its_agent_and_the_answer_wakes_it_at_once(db: Database) -> None:
    async with Runtime(_settings(db)) as rt:
        await _spawned(rt)
        await rt.tell("type:asker", Message("work", {"timeout": 120}))
        await eventually(lambda: rt.stats()["parked"] == 1, timeout=30)
        # The asker is free while the question is out: it answers another message.
        pong = await rt.ask("type:asker", Message("ping", {}), timeout=10)
        assert pong.payload == {"pong": True}
        loop = asyncio.get_running_loop()
        released = loop.time()
        Slow.release.set()
        await asyncio.wait_for(Asker.finished.wait(), 30)
        woke_in = loop.time() - released
    assert Asker.outcome == [0]
    assert effects == {"before": 1, "asked": 1, "after": 1}
    assert woke_in < 30  # pushed by the answer's commit: the next sweep is a minute away


async def test_a_fan_out_of_long_asks_parks_once_and_asks_each_once(db: Database) -> None:
    async with Runtime(_settings(db, sweep_interval=0.05)) as rt:
        for i in range(3):
            await rt.spawn(Slow, id=f"slow-{i}")
        await rt.spawn(Asker, id="asker")
        await rt.tell("type:asker", Message("work", {"timeout": 120, "asks": 3}))
        await eventually(lambda: effects["asked"] == 3, timeout=30)
        await eventually(lambda: rt.stats()["parked"] >= 1, timeout=30)
        Slow.release.set()
        await asyncio.wait_for(Asker.finished.wait(), 30)
    assert sorted(Asker.outcome) == [0, 2, 4]
    assert effects == {"before": 1, "asked": 3, "after": 1}


async def test_a_parked_ask_times_out_at_its_first_deadline(db: Database) -> None:
    async with Runtime(_settings(db, sweep_interval=0.05)) as rt:
        await _spawned(rt)
        began = time.time()
        await rt.tell("type:asker", Message("work", {"timeout": 1.5}))
        await asyncio.wait_for(Asker.finished.wait(), 30)
        ended = time.time()
        Slow.release.set()  # let the unanswered question end
        assert rt.stats()["parked"] >= 1
    assert Asker.outcome == "timed out after 1.5s"
    # Each wake-up waits for what is left of the first deadline: a restarted timeout would
    # park again for ever (and ask again).
    assert 1.5 <= ended - began < 20
    assert effects == {"before": 1, "asked": 1, "after": 1}


async def test_a_question_that_fails_every_attempt_wakes_its_parked_asker_with_the_error(
    db: Database,
) -> None:
    async with Runtime(_settings(db)) as rt:
        await rt.spawn(Failing, id="failing")
        await rt.spawn(Asker, id="asker")
        await rt.tell("type:asker", Message("work", {"timeout": 120, "to": "type:failing"}))
        await eventually(lambda: rt.stats()["parked"] == 1, timeout=30)
        Failing.go.set()
        await asyncio.wait_for(Asker.finished.wait(), 30)  # the sweep is a minute away
    assert isinstance(Asker.outcome, str)
    assert Asker.outcome.startswith("HandlerError") and "cannot answer" in Asker.outcome
    assert effects == {"before": 1, "failed": 2, "after": 1}


async def test_an_answer_recorded_before_the_park_wakes_the_handler_at_once(
    db: Database,
) -> None:
    """The answer's commit found no wake-up to send (the park was not committed yet): the
    park, once committed, reads the answer and sends its wake-up itself."""
    async with Runtime(_settings(db)) as rt:
        await rt.spawn(Woken, id="woken")
        journal = rt.journal
        assert isinstance(journal, StoreJournal)
        message = Message("work", {}, target="type:woken")
        asked = derived_id(f"{message.id}/type:woken", 0)
        answer = Message("q", {"n": 1}, id=asked).reply({"answer": 2})
        processed = {
            "agent_id": "slow",
            "message_id": asked,
            "reply": answer.to_dict(),
            "processed_at": datetime.now(UTC),
        }
        await journal.store.apply(Batch(processed=[processed]))
        until = time.time() + 3600
        await journal.parked("woken", message, None, [Wait(until, ask=0, asked=asked)])
        woken = await asyncio.wait_for(Woken.got.get(), 30)
    assert woken.id == message.id
    assert woken.metadata[ASKS_KEY] == {"0": until}


async def test_an_answer_committed_after_the_park_sends_its_wake_up(db: Database) -> None:
    async with Runtime(_settings(db)) as rt:
        await rt.spawn(Woken, id="woken")
        journal = rt.journal
        assert isinstance(journal, StoreJournal)
        message = Message("work", {}, target="type:woken")
        asked = Message("q", {"n": 1}, metadata={WAKES_KEY: message.id})
        await journal.parked(
            "woken", message, None, [Wait(time.time() + 3600, ask=0, asked=asked.id)]
        )
        await journal.flush()
        assert Woken.got.empty()
        await journal.handled("slow", asked, asked.reply({"answer": 2}), None)
        woken = await asyncio.wait_for(Woken.got.get(), 30)
    assert woken.id == message.id


class CycleA(Agent):
    """Asks `cycle_b`, which asks this type back before it answers: a cycle of asks."""

    type = "cycle_a"

    async def handle_message(self, message: Message) -> Message:
        if message.type == "who":
            return message.reply({"me": "a"})
        reply = await self.ctx.ask("type:cycle_b", Message("ping", {}), timeout=60)
        return message.reply({"b said": reply.payload})


class CycleB(Agent):
    type = "cycle_b"

    async def handle_message(self, message: Message) -> Message:
        reply = await self.ctx.ask("type:cycle_a", Message("who", {}), timeout=60)
        return message.reply({"a is": reply.payload["me"]})


async def test_a_cycle_of_long_asks_completes_because_the_first_asker_parks(
    db: Database,
) -> None:
    """A asks B, and B asks A before it answers: A, parked, is free to answer B (a handler
    that held its agent would wait for B until its ask timed out)."""
    async with Runtime(_settings(db)) as rt:
        await rt.spawn(CycleA, id="a")
        await rt.spawn(CycleB, id="b")
        reply = await rt.ask("agent:a", Message("start", {}), timeout=30)
        assert rt.stats()["parked"] >= 1
    assert reply.payload == {"b said": {"a is": "a"}}
