"""aiosqlite connections that may be stopped twice, so closing SQLite never hangs a process.

aiosqlite (0.22) runs each connection on a worker thread fed by a queue. `stop()` queues a
sentinel on which the thread exits; `close()` ends with a `stop()` of its own and waits for
its answer. A second `stop()` queues behind the first sentinel, where nobody answers it, so
`close()` after `stop()` waits for ever.

SQLAlchemy produces that order when the task using a connection is cancelled twice while the
thread is busy (Ctrl-C during a shutdown, a timeout inside a cancelled scope, a slow disk):
it gives the connection up with a shielded `close()` and, cancelled again, falls back to
`stop()`. The shielded close then never ends, and `asyncio.run()`, which waits for every
task at exit, never returns. (Reported as wapiti-scanner/wapiti#802; not fixed in aiosqlite
0.22.1, the latest release.) Here a second `stop()` queues nothing and returns the first
one's answer: that sentinel already closes the connection and ends the thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import aiosqlite

__all__ = ["StoppableConnection", "open_connection"]


class StoppableConnection(aiosqlite.Connection):
    """An aiosqlite connection whose `stop()` queues the thread's end once."""

    def __init__(self, connector: Any, iter_chunk_size: int) -> None:
        super().__init__(connector, iter_chunk_size)
        self._stop_queued = False
        self._stopped: asyncio.Future[Any] | None = None
        # As SQLAlchemy's dialect does for the connections it opens: a connection somebody
        # forgot must not keep the process alive at exit.
        self._thread.daemon = True

    def stop(self) -> asyncio.Future[Any] | None:
        """Queue the thread's end once; later calls return the first one's answer.

        So a `close()` after `stop()` waits until the thread has closed the connection and
        answered, and the event loop is not closed under that answer.
        """
        if not self._stop_queued:
            self._stop_queued = True
            self._stopped = super().stop()
        return self._stopped


def open_connection(
    database: str, *, iter_chunk_size: int = 64, **kwargs: Any
) -> StoppableConnection:
    """`aiosqlite.connect`, with the connection class above (awaitable, like aiosqlite's)."""

    def connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(database, **kwargs)
        return connection

    return StoppableConnection(connector, iter_chunk_size)
