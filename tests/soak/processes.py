"""`mas api` and `mas worker` processes for the soak, driven from an async harness.

`tests/process_support.MasProcess` waits on threads with blocking calls; the soak's event
loop also runs the fault proxies those processes connect through, so a blocking wait there
would stall the very connections a process needs to start. Here output is read by tasks of
the harness's task group, written to one log file per process incarnation, and waited on
with anyio events and deadlines.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import anyio
from anyio.abc import ByteReceiveStream, Process, TaskGroup
from anyio.streams.text import TextReceiveStream

__all__ = ["ProcessFailed", "Slot", "SoakProcess"]

Say = Callable[[str], None]


class ProcessFailed(Exception):
    """A process did not start (no ready line before its deadline, or it exited)."""


@dataclass(eq=False)
class SoakProcess:
    """One incarnation of a `python -m mas.cli ...` process, its output in `log`."""

    name: str  # the incarnation's name, e.g. "w1-2" (also its MAS_NODE_ID for a worker)
    args: list[str]
    log: Path
    ready_marker: str
    process: Process | None = None
    started_at: float = 0.0  # time.time() when spawned
    ready_at: float | None = None
    exited_at: float | None = None
    returncode: int | None = None
    signalled: str | None = None  # the last signal the harness sent it, if any
    signalled_at: float | None = None  # time.time() just after sending it
    failed_start: bool = False  # it exited, or said nothing ready, before its deadline
    _ready: anyio.Event = field(default_factory=anyio.Event)
    _exited: anyio.Event = field(default_factory=anyio.Event)
    _streams_open: int = 0

    async def spawn(self, env: dict[str, str], cwd: Path, group: TaskGroup) -> None:
        """Start it; its output is read by tasks of `group` until it closes."""
        self.started_at = time.time()
        self.process = await anyio.open_process(
            [sys.executable, "-m", "mas.cli", *self.args],
            env=env,
            cwd=cwd,
            stdin=None,
            start_new_session=True,  # a Ctrl-C of the harness does not reach it first
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        sink = self.log.open("a", buffering=1)  # line-buffered: readable while it runs
        self._streams_open = 2
        group.start_soon(self._read, self.process.stdout, sink)
        group.start_soon(self._read, self.process.stderr, sink)

    async def _read(self, stream: ByteReceiveStream, sink: TextIO) -> None:
        buffer = ""
        try:
            async for text in TextReceiveStream(stream, errors="replace"):
                buffer += text
                *lines, buffer = buffer.split("\n")
                for line in lines:
                    sink.write(line + "\n")
                    if not self._ready.is_set() and self.ready_marker in line:
                        self.ready_at = time.time()
                        self._ready.set()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            if buffer:
                sink.write(buffer + "\n")
            self._streams_open -= 1
            if self._streams_open == 0:
                sink.close()
                await self._reap()

    async def _reap(self) -> None:
        assert self.process is not None
        with anyio.move_on_after(30):
            self.returncode = await self.process.wait()
        self.exited_at = time.time()
        self._exited.set()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def wait_ready(self, timeout: float) -> None:
        """Raises ProcessFailed if it exits or says nothing ready within `timeout`."""
        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as race:

                async def ready() -> None:
                    await self._ready.wait()
                    race.cancel_scope.cancel()

                async def exited() -> None:
                    await self._exited.wait()
                    race.cancel_scope.cancel()

                race.start_soon(ready)
                race.start_soon(exited)
        if not self._ready.is_set():
            state = f"exited {self.returncode}" if self._exited.is_set() else "no ready line"
            raise ProcessFailed(f"{self.name}: {state} within {timeout:.0f} s (log {self.log})")

    def send(self, signum: signal.Signals) -> None:
        if self.running:
            assert self.process is not None
            self.signalled = signum.name
            with contextlib.suppress(ProcessLookupError):  # gone already
                self.process.send_signal(signum)
            self.signalled_at = time.time()

    async def wait_exit(self, timeout: float) -> bool:
        """Whether it exited (and its output was read) within `timeout`."""
        with anyio.move_on_after(timeout):
            await self._exited.wait()
        return self._exited.is_set()

    async def kill(self) -> None:
        """SIGKILL, then wait until it is reaped (bounded)."""
        self.send(signal.SIGKILL)
        if not await self.wait_exit(30) and self.process is not None:
            with contextlib.suppress(ProcessLookupError):  # gone already
                os.killpg(self.process.pid, signal.SIGKILL)

    async def stop(self, timeout: float) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited in `timeout`; the exit code."""
        self.send(signal.SIGTERM)
        if not await self.wait_exit(timeout):
            await self.kill()
        return self.returncode


def _set_event() -> anyio.Event:
    event = anyio.Event()
    event.set()
    return event


@dataclass(eq=False)
class Slot:
    """A role (the gateway, worker 1, ...) whose process the soak kills and restarts."""

    role: str  # "api" | "w1" | "w2" | ...
    args: list[str]
    ready_marker: str
    logdir: Path
    env: dict[str, str]
    cwd: Path
    group: TaskGroup
    say: Say
    incarnations: list[SoakProcess] = field(default_factory=list)
    idle: anyio.Event = field(default_factory=_set_event)  # unset while a fault restarts it

    @property
    def current(self) -> SoakProcess | None:
        return self.incarnations[-1] if self.incarnations else None

    async def start(self, timeout: float, attempts: int = 5) -> SoakProcess:
        """A new incarnation, ready; retried (a fresh one each time) while it fails to start."""
        last: ProcessFailed | None = None
        for attempt in range(attempts):
            number = len(self.incarnations) + 1
            name = f"{self.role}-{number}"
            env = self.env | {"MAS_NODE_ID": name}
            process = SoakProcess(name, self.args, self.logdir / f"{name}.log", self.ready_marker)
            self.incarnations.append(process)
            await process.spawn(env, self.cwd, self.group)
            try:
                await process.wait_ready(timeout)
            except ProcessFailed as exc:
                last = exc
                process.failed_start = True
                self.say(f"  {name} did not start (attempt {attempt + 1}): {exc}")
                await process.kill()
                await anyio.sleep(min(2**attempt, 10))  # back off while a service is away
                continue
            return process
        assert last is not None
        raise last

    async def shutdown(self, timeout: float) -> None:
        """Stop every incarnation still running (SIGTERM, then SIGKILL)."""
        for process in self.incarnations:
            if process.running:
                await process.stop(timeout)
