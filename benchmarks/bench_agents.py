"""Agents hosted by the `mas worker` subprocesses of `benchmarks/distributed.py`.

Work agents count what they handled and report it to `agent:bench-collector` (hosted by the
benchmark process): debounced, at most one report per agent every `REPORT_EVERY` seconds plus a
final one after the last message, so the reports add a few messages per second, not one per
message. A report carries the agent's count for the run and the `time.monotonic()` at which it
finished its last message (CLOCK_MONOTONIC is shared by every process on the machine), so the
benchmark times "first publish -> last message handled" without the debounce delay.
"""

from __future__ import annotations

import asyncio
import sys
import time

from mas import Agent, Message

__all__ = [
    "COLLECTOR",
    "BenchChild",
    "BenchEcho",
    "BenchFanOut",
    "IoPair",
    "IoSolo",
    "NoIoPair",
    "NoIoSolo",
]

COLLECTOR = "agent:bench-collector"
REPORT_EVERY = 0.2  # s; the report carries the last handled time, so this only delays detection
IO_SECONDS = 0.05  # an external call (an HTTP API, a database): the handler waits, the CPU does not


class _Counting(Agent):
    """Handles `bench.work` messages and reports progress to the benchmark's collector."""

    io_seconds = 0.0

    async def start(self) -> None:
        self.run = ""
        self.count = 0
        self.last = 0.0
        self.flush: asyncio.Task[None] | None = None

    async def handle_message(self, message: Message) -> None:
        if self.io_seconds:
            await asyncio.sleep(self.io_seconds)
        run = message.payload.get("run", "")
        if run != self.run:
            self.run, self.count = run, 0
        self.count += 1
        self.last = time.monotonic()
        if self.flush is None:
            self.flush = asyncio.get_running_loop().create_task(self._report())

    async def _report(self) -> None:
        await asyncio.sleep(REPORT_EVERY)
        self.flush = None
        report = {"run": self.run, "agent": self.id, "count": self.count, "last": self.last}
        try:
            await self.ctx.send(COLLECTOR, Message("bench.report", report))
        except Exception as exc:  # a lost report shows as a timeout in the benchmark
            print(f"bench report failed: {exc!r}", file=sys.stderr, flush=True)


class IoSolo(_Counting):
    """Awaits IO_SECONDS (50 ms) of simulated I/O per message; hosted by the first worker only."""

    type = "bench_io_solo"
    io_seconds = IO_SECONDS


class IoPair(_Counting):
    """Awaits IO_SECONDS (50 ms) of simulated I/O per message; hosted by both workers."""

    type = "bench_io_pair"
    io_seconds = IO_SECONDS


class NoIoSolo(_Counting):
    """Returns at once; hosted by the first worker only."""

    type = "bench_noio_solo"


class NoIoPair(_Counting):
    """Returns at once; hosted by both workers."""

    type = "bench_noio_pair"


class BenchEcho(Agent):
    """Answers every message with `message.reply(message.payload)`."""

    type = "bench_echo"

    async def handle_message(self, message: Message) -> Message:
        return message.reply(message.payload)


class BenchChild(BenchEcho):
    """A fan-out's child: answers with its payload (hosted by worker 2 only, so that the
    fan-out on worker 1 asks over the broker)."""

    type = "bench_child"


class BenchFanOut(Agent):
    """Asks `bench_child` `payload.n` questions at once and answers once all answered:
    as durable steps (`ctx.gather(ctx.ask ...)`) or as plain concurrent asks
    (`asyncio.gather(runtime.ask ...)`), as `payload.durable` says."""

    type = "bench_fanout"

    async def handle_message(self, message: Message) -> Message:
        ctx, n = self.ctx, int(message.payload["n"])
        if message.payload["durable"]:
            replies = await ctx.gather(
                *[
                    ctx.ask("type:bench_child", Message("bench.child", {"i": i}), timeout=300)
                    for i in range(n)
                ]
            )
        else:
            replies = await asyncio.gather(
                *[
                    ctx.runtime.ask(
                        "type:bench_child", Message("bench.child", {"i": i}), timeout=300
                    )
                    for i in range(n)
                ]
            )
        return message.reply({"answers": len(replies)})
