"""Supervisors, read like OTP: child specs, strategies, restart types, intensity, escalation.

- Strategies: `one_for_one` restarts the failed child; `one_for_all` restarts every child;
  `rest_for_one` restarts the failed child and those started after it. Children are stopped
  in reverse start order and started again in start order.
- Restart types: `permanent` children are always restarted (a crash or `ctx.stop()`),
  `transient` only after a crash, `temporary` never. `AgentRef.stop()` is never undone.
- Intensity: more than `max_restarts` restarts within `period` seconds and the supervisor
  stops its children (reverse order) and fails to its parent; the root's failure is raised to
  the code that embeds the runtime.
- Restarts after the first in a window wait an exponential backoff with jitter.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import structlog

from mas.actors.agent import Agent
from mas.actors.backoff import RetryPolicy, backoff_delay
from mas.actors.cell import AgentCell
from mas.actors.journal import StartedAgent
from mas.actors.mailbox import Mailbox, Overflow
from mas.errors import AgentStartError, ConfigError, SupervisorEscalation

if TYPE_CHECKING:
    from mas.actors.host import AgentHost
    from mas.actors.ref import AgentRef

__all__ = ["ChildSpec", "Restart", "RestartIntensity", "Strategy", "Supervisor", "new_agent_id"]

_log = structlog.get_logger("mas.supervisor")

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
Restart = Literal["permanent", "transient", "temporary"]
_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
_RESTARTS = ("permanent", "transient", "temporary")


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~1 µs more on every spawn
class ChildSpec:
    """How to start (and restart) one agent under a supervisor.

    `factory` is an Agent subclass or a zero-argument callable returning a fresh instance;
    it is called again on every restart. `shutdown` is how long a running handler may take
    to finish when the agent is stopped or restarted before it is cancelled.
    """

    factory: type[Agent] | Callable[[], Agent]
    id: str | None = None
    restart: Restart = "permanent"
    shutdown: float | None = None
    mailbox_capacity: int | None = None
    overflow: Overflow | None = None
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.restart not in _RESTARTS:
            raise ConfigError(f"restart must be one of {_RESTARTS}, got {self.restart!r}")
        if self.mailbox_capacity is not None and self.mailbox_capacity < 1:
            raise ConfigError("mailbox_capacity must be at least 1")
        if self.overflow is not None and self.overflow not in ("block", "reject", "drop_oldest"):
            raise ConfigError(
                f"overflow must be 'block', 'reject' or 'drop_oldest', got {self.overflow!r}"
            )
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")


class RestartIntensity:
    """Counts restarts in a sliding window of `period` seconds."""

    __slots__ = ("_times", "max_restarts", "period")

    def __init__(self, max_restarts: int, period: float) -> None:
        self.max_restarts = max_restarts
        self.period = period
        self._times: deque[float] = deque()

    def record(self, now: float) -> bool:
        """Count a restart at `now`; False when it exceeds the intensity (escalate)."""
        times = self._times
        times.append(now)
        while times and times[0] <= now - self.period:
            times.popleft()
        return len(times) <= self.max_restarts

    @property
    def recent(self) -> int:
        """Restarts counted in the current window (including the latest)."""
        return len(self._times)

    def reset(self) -> None:
        self._times.clear()


class Supervisor:
    """Starts, watches and restarts its children; fails to its parent past its intensity."""

    def __init__(
        self,
        runtime: AgentHost,
        id: str,
        *,
        strategy: Strategy = "one_for_one",
        max_restarts: int | None = None,
        period: float | None = None,
        parent: Supervisor | None = None,
    ) -> None:
        if strategy not in _STRATEGIES:
            raise ConfigError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
        defaults = runtime.settings.supervisor
        self.runtime = runtime
        self.id = id
        self.strategy: Strategy = strategy
        self.parent = parent
        # In start order; a dict, so that finding or removing one child costs the same
        # among 100,000 siblings as among two (a crash looks its child up twice).
        self.children: dict[AgentCell | Supervisor, None] = {}
        self.intensity = RestartIntensity(
            defaults.max_restarts if max_restarts is None else max_restarts,
            defaults.period if period is None else period,
        )
        self.stopped = False
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Supervisor({self.id!r}, {self.strategy}, children={len(self.children)})"

    @property
    def path(self) -> str:
        """Its place in the node's supervision tree: the ids from the root down, by `/`
        (what the agents' records say, so a dashboard can draw any node's tree)."""
        return self.id if self.parent is None else f"{self.parent.path}/{self.id}"

    # -- starting children -------------------------------------------------------------------

    async def spawn(
        self,
        agent: type[Agent] | Callable[[], Agent],
        *,
        id: str | None = None,
        restart: Restart = "permanent",
        shutdown: float | None = None,
        mailbox_capacity: int | None = None,
        overflow: Overflow | None = None,
        max_attempts: int | None = None,
    ) -> AgentRef:
        """Start an agent as a child of this supervisor (see `ChildSpec`).

        Raises:
            DuplicateAgent: `id` is taken.
            AgentStartError: the agent's `start()` raised.
        """
        spec = ChildSpec(agent, id, restart, shutdown, mailbox_capacity, overflow, max_attempts)
        return await self.start_child(spec)

    async def start_child(self, spec: ChildSpec) -> AgentRef:
        """Start the agent a `ChildSpec` describes; see `spawn` for the errors raised."""
        runtime = self.runtime
        runtime.check_running()
        if self.stopped:
            raise ConfigError(f"supervisor {self.id!r} is stopped and starts no children")
        factory = spec.factory
        try:
            instance = factory()
        except Exception as exc:
            raise AgentStartError(f"creating the agent failed: {exc!r}") from exc
        if not isinstance(instance, Agent):
            raise ConfigError(
                f"spawn needs an Agent subclass or a factory returning an Agent, "
                f"got {type(instance).__name__}"
            )
        cls = type(instance)
        settings = runtime.settings
        agent_id = spec.id if spec.id is not None else new_agent_id(cls.type)
        capacity = spec.mailbox_capacity or cls.mailbox_capacity or settings.mailbox.capacity
        overflow = spec.overflow or cls.overflow or settings.mailbox.overflow
        attempts = spec.max_attempts or cls.max_attempts or settings.retry.max_attempts
        retry = runtime.retry_policy
        if attempts != retry.max_attempts:
            retry = RetryPolicy(attempts, retry.base_delay, retry.max_delay, retry.jitter)
        cell = AgentCell(
            runtime,
            self,
            agent_id,
            cls.type,
            factory,
            spec.restart,
            Mailbox(agent_id, capacity, overflow),
            retry,
            settings.shutdown_timeout if spec.shutdown is None else spec.shutdown,
            cls.capabilities,
        )
        runtime.register(cell)  # raises DuplicateAgent before start() runs
        try:
            instance.ctx = cell.ctx
            await instance.start()
        except Exception as exc:
            await runtime.unregister(cell)
            raise AgentStartError(f"agent {agent_id!r} failed in start(): {exc!r}") from exc
        cell.instance = instance
        self.children[cell] = None
        _record_started(cell)
        await runtime.subscribe_cell(cell, cls)
        await cell.resume()
        return cell.ref()

    async def spawn_supervisor(
        self,
        id: str,
        *,
        strategy: Strategy = "one_for_one",
        max_restarts: int | None = None,
        period: float | None = None,
    ) -> Supervisor:
        """Start a child supervisor (its failure counts as one of this supervisor's children)."""
        self.runtime.check_running()
        child = Supervisor(
            self.runtime,
            id,
            strategy=strategy,
            max_restarts=max_restarts,
            period=period,
            parent=self,
        )
        self.runtime.register_supervisor(child)
        self.children[child] = None
        return child

    # -- reacting to children ----------------------------------------------------------------

    async def child_failed(self, child: AgentCell | Supervisor, exc: BaseException | None) -> None:
        """Apply the strategy after `child` crashed (or, if `exc` is None, exited normally)."""
        async with self._lock:
            if child not in self.children or self.stopped:
                return
            if isinstance(child, AgentCell) and (
                child.restart == "temporary" or (exc is None and child.restart == "transient")
            ):
                await self._remove(child, "failed" if exc is not None else "stopped")
                return
            runtime = self.runtime
            if not self.intensity.record(runtime.clock.time()):
                await self._escalate(exc)
                return
            affected = self._affected(child)
            for each in reversed(affected):
                await each.suspend()
            _count_restarts(affected)
            settings = runtime.settings.supervisor
            # The first restart in a window is immediate; restarts in a row back off.
            in_a_row = self.intensity.recent - 1
            delay = (
                backoff_delay(
                    in_a_row, settings.backoff_base, settings.backoff_max, settings.jitter
                )
                if in_a_row
                else 0.0
            )
            _log.warning(
                "agent_restarting",
                supervisor_id=self.id,
                strategy=self.strategy,
                child_id=child.id,
                restarting=[each.id for each in affected],
                error_type=type(exc).__name__ if exc is not None else None,
                error=str(exc) if exc is not None else None,
                delay=round(delay, 4),
            )
        if delay > 0:
            runtime.call_later(delay, lambda: self._restart(affected))
        else:
            await self._restart(affected)

    async def child_exited(self, cell: AgentCell) -> None:
        """The agent called `ctx.stop()`: a normal exit (only `permanent` is restarted)."""
        await self.child_failed(cell, None)

    def _affected(self, child: AgentCell | Supervisor) -> list[AgentCell | Supervisor]:
        if self.strategy == "one_for_one":
            return [child]
        if self.strategy == "one_for_all":
            return list(self.children)
        children = list(self.children)
        return children[children.index(child) :]

    async def _restart(self, affected: list[AgentCell | Supervisor]) -> None:
        failed: tuple[AgentCell | Supervisor, BaseException] | None = None
        async with self._lock:
            for each in affected:
                if each not in self.children or self.stopped:
                    continue
                try:
                    await each.resume()
                except AgentStartError as exc:
                    failed = (each, exc)
                    break
                _record_started(each)
                _log.info("agent_restarted", supervisor_id=self.id, child_id=each.id)
        if failed is not None:
            await self.child_failed(*failed)

    async def _escalate(self, exc: BaseException | None) -> None:
        error = SupervisorEscalation(self.id, self.intensity.max_restarts, self.intensity.period)
        error.__cause__ = exc
        _log.error(
            "supervisor_escalated",
            supervisor_id=self.id,
            max_restarts=self.intensity.max_restarts,
            period=self.intensity.period,
            error_type=type(exc).__name__ if exc is not None else None,
            error=str(exc) if exc is not None else None,
        )
        for each in reversed(self.children):
            await each.suspend()
        if self.parent is not None:
            self.runtime.start_task(self.parent.child_failed(self, error))
        else:
            self.runtime.fail(error)

    async def _remove(self, child: AgentCell | Supervisor, reason: str) -> None:
        self.children.pop(child, None)
        if isinstance(child, AgentCell):
            await child.terminate(reason)
        else:
            await child.stop()

    async def stop_child(self, child: AgentCell | Supervisor, reason: str = "stopped") -> None:
        """Stop one child for good, whatever its restart type."""
        async with self._lock:
            await self._remove(child, reason)

    # -- as a child of another supervisor ----------------------------------------------------

    async def suspend(self) -> None:
        for each in reversed(self.children):
            await each.suspend()

    async def resume(self) -> None:
        self.intensity.reset()
        for each in self.children:
            await each.resume()

    async def stop(self) -> None:
        """Stop every child in reverse start order, then this supervisor."""
        if self.stopped:
            return
        self.stopped = True
        while self.children:
            child, _ = self.children.popitem()  # the last started first
            if isinstance(child, AgentCell):
                await child.terminate("shutdown")
            else:
                await child.stop()
        self.runtime.unregister_supervisor(self)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "strategy": self.strategy,
            "children": [
                c.describe() if isinstance(c, Supervisor) else {"id": c.id} for c in self.children
            ],
            "recent_restarts": self.intensity.recent,
        }


def new_agent_id(agent_type: str) -> str:
    """An id for an agent spawned without one: its type and 12 random hex digits."""
    return f"{agent_type}-{uuid.uuid4().hex[:12]}"


def _count_restarts(restarted: Iterable[AgentCell | Supervisor]) -> None:
    """Add one restart to each agent restarted, a supervisor's agents included."""
    for each in restarted:
        if isinstance(each, AgentCell):
            each.restarts += 1
            each.counters.restarts += 1
        else:
            _count_restarts(each.children)


def _record_started(started: AgentCell | Supervisor) -> None:
    """Journal that the agents of `started` run (again): where in the tree, how often
    restarted, what they offer (the agents' records, which every node reads)."""
    journal = started.runtime.journal
    if journal is None:
        return
    if isinstance(started, Supervisor):
        for child in started.children:
            _record_started(child)
        return
    journal.agent_started(
        StartedAgent(
            started.id,
            started.agent_type,
            started.capabilities,
            started.supervisor.path,
            started.restarts,
        )
    )
