"""Mailbox: FIFO order, the three overflow policies, and closing."""

from __future__ import annotations

import asyncio

import pytest

from mas.actors.mailbox import Mailbox
from mas.errors import AgentStopped, MailboxFull

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def drain(mailbox):
    items = []
    while len(mailbox):
        items.append(mailbox.get_nowait())
    return items


async def start_blocked_putter(mailbox, item):
    """Start a task that calls `put(item)` and return once it waits for room.

    `started.set()` only schedules our wake-up; the task runs on until it parks inside `put`,
    so when `started.wait()` returns the putter is already blocked.
    """
    started = asyncio.Event()

    async def putter():
        started.set()
        return await mailbox.put(item)

    task = asyncio.create_task(putter())
    await started.wait()
    return task


async def test_items_come_out_in_fifo_order():
    mailbox = Mailbox("a", capacity=10, overflow="block")
    for item in range(5):
        mailbox.put_nowait(item)
    await mailbox.put(5)

    assert len(mailbox) == 6
    assert drain(mailbox) == [0, 1, 2, 3, 4, 5]


async def test_empty_mailbox_has_length_zero_and_gives_none():
    mailbox = Mailbox("a", capacity=1, overflow="block")

    assert len(mailbox) == 0
    assert mailbox.get_nowait() is None


async def test_put_below_capacity_drops_nothing():
    mailbox = Mailbox("a", capacity=2, overflow="drop_oldest")

    assert mailbox.put_nowait("x") is None
    assert await mailbox.put("y") is None


@pytest.mark.parametrize("overflow", ["reject", "block"])
async def test_put_nowait_at_capacity_raises_mailbox_full(overflow):
    mailbox = Mailbox("worker-1", capacity=2, overflow=overflow)
    mailbox.put_nowait("a")
    mailbox.put_nowait("b")

    with pytest.raises(MailboxFull) as excinfo:
        mailbox.put_nowait("c")

    assert (excinfo.value.agent_id, excinfo.value.capacity) == ("worker-1", 2)
    assert drain(mailbox) == ["a", "b"]


async def test_reject_policy_put_raises_instead_of_waiting():
    mailbox = Mailbox("worker-1", capacity=1, overflow="reject")
    await mailbox.put("a")

    with pytest.raises(MailboxFull):
        await mailbox.put("b")
    assert drain(mailbox) == ["a"]


async def test_drop_oldest_hands_back_the_dropped_item():
    mailbox = Mailbox("a", capacity=2, overflow="drop_oldest")
    mailbox.put_nowait(1)
    mailbox.put_nowait(2)

    assert mailbox.put_nowait(3) == 1
    assert await mailbox.put(4) == 2
    assert drain(mailbox) == [3, 4]


async def test_block_policy_put_waits_until_a_get_frees_room():
    mailbox = Mailbox("a", capacity=1, overflow="block")
    await mailbox.put("first")

    putter = await start_blocked_putter(mailbox, "second")
    assert not putter.done()
    assert len(mailbox) == 1

    assert mailbox.get_nowait() == "first"
    assert await asyncio.wait_for(putter, timeout=5) is None
    assert drain(mailbox) == ["second"]


async def test_blocked_putters_are_admitted_in_arrival_order():
    mailbox = Mailbox("a", capacity=1, overflow="block")
    await mailbox.put(0)
    first = await start_blocked_putter(mailbox, 1)
    second = await start_blocked_putter(mailbox, 2)

    assert mailbox.get_nowait() == 0
    await asyncio.wait_for(first, timeout=5)
    assert not second.done()
    assert mailbox.get_nowait() == 1
    await asyncio.wait_for(second, timeout=5)
    assert drain(mailbox) == [2]


async def test_cancelled_putter_passes_its_wake_up_on():
    """A putter woken and then cancelled must not waste the room it was woken for."""
    mailbox = Mailbox("a", capacity=1, overflow="block")
    await mailbox.put("first")
    woken = await start_blocked_putter(mailbox, "cancelled")
    waiting = await start_blocked_putter(mailbox, "second")

    assert mailbox.get_nowait() == "first"
    woken.cancel()

    await asyncio.wait_for(waiting, timeout=5)
    assert woken.cancelled()
    assert drain(mailbox) == ["second"]


async def test_put_force_ignores_capacity():
    mailbox = Mailbox("a", capacity=1, overflow="reject")
    mailbox.put_nowait("a")

    mailbox.put_force("b")
    mailbox.put_force("c")

    assert len(mailbox) == 3
    assert drain(mailbox) == ["a", "b", "c"]


async def test_put_front_puts_an_item_back_at_the_head():
    mailbox = Mailbox("a", capacity=5, overflow="block")
    mailbox.put_nowait("b")
    mailbox.put_nowait("c")
    taken = mailbox.get_nowait()

    mailbox.put_front(taken)
    mailbox.put_front("a")

    assert drain(mailbox) == ["a", "b", "c"]


async def test_put_force_and_put_front_work_on_a_fresh_mailbox():
    forced = Mailbox("a", capacity=1, overflow="block")
    forced.put_force("x")
    front = Mailbox("b", capacity=1, overflow="block")
    front.put_front("y")

    assert drain(forced) == ["x"]
    assert drain(front) == ["y"]


async def test_close_returns_leftovers_and_empties_the_mailbox():
    mailbox = Mailbox("a", capacity=5, overflow="block")
    for item in "xyz":
        mailbox.put_nowait(item)

    assert mailbox.close() == ["x", "y", "z"]
    assert len(mailbox) == 0
    assert mailbox.get_nowait() is None


async def test_close_of_an_unused_mailbox_returns_nothing():
    assert Mailbox("a", capacity=1, overflow="block").close() == []


async def test_close_fails_blocked_putters_with_agent_stopped():
    mailbox = Mailbox("worker-9", capacity=1, overflow="block")
    await mailbox.put("first")
    putters = [
        await start_blocked_putter(mailbox, "second"),
        await start_blocked_putter(mailbox, "third"),
    ]

    assert mailbox.close() == ["first"]

    for putter in putters:
        with pytest.raises(AgentStopped) as excinfo:
            await asyncio.wait_for(putter, timeout=5)
        assert excinfo.value.agent_id == "worker-9"
