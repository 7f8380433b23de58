"""A process using SQLite ends when it is interrupted in the middle of a write.

aiosqlite 0.22 answers a connection's `close()` after its `stop()` never: the worker thread
has exited on stop's sentinel. SQLAlchemy produces that order when the task writing is
cancelled twice (Ctrl-C during a shutdown, a timeout inside a cancelled scope) while the
disk is slow, and `asyncio.run()` then waits for ever for the shielded close it left behind.
This hung a CI run for 90 minutes after a test that passed.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mas.persistence.engine import connect
from mas.testing import eventually

# Generous: a loaded machine can be slow; a hang is for ever.
DEADLINE = 60.0


def test_a_write_interrupted_twice_on_a_slow_disk_does_not_hang_the_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = SlowDisk()
    ended = threading.Event()
    thread_errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: thread_errors.append(args.exc_value))
    before = set(threading.enumerate())

    def run() -> None:
        asyncio.run(_interrupted_write(f"sqlite+aiosqlite:///{tmp_path}/mas.db", disk))
        ended.set()

    # A thread of its own, so a hang fails this test instead of stopping the whole run.
    threading.Thread(target=run, daemon=True).start()
    assert ended.wait(DEADLINE), "asyncio.run() did not return: closing SQLite hung"
    # The connection's worker thread answered before the loop closed, and ended.
    for thread in set(threading.enumerate()) - before:
        thread.join(DEADLINE)
        assert not thread.is_alive(), thread
    assert thread_errors == []


class SlowDisk:
    """A SQL function that holds the connection's worker thread until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def stall(self) -> int:
        self.entered.set()
        self.release.wait(DEADLINE)
        return 1


async def _interrupted_write(url: str, disk: SlowDisk) -> None:
    engine = await connect(url)
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        assert raw.driver_connection is not None
        await raw.driver_connection.create_function("stall", 0, disk.stall)
    write = asyncio.create_task(_write(engine))
    await asyncio.to_thread(disk.entered.wait, DEADLINE)
    # Interrupted while the disk holds the write: SQLAlchemy gives the connection up and
    # closes it, shielded; interrupted again while it waits for that close.
    write.cancel()
    await eventually(_closing, timeout=DEADLINE)
    write.cancel()
    await asyncio.gather(write, return_exceptions=True)
    disk.release.set()
    # Returning leaves asyncio.run() to cancel and wait for the close still pending.


async def _write(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT stall()"))


def _closing() -> bool:
    return any("graceful_close" in repr(task.get_coro()) for task in asyncio.all_tasks())
