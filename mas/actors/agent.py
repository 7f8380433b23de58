"""The Agent base class users subclass, and the AgentContext it talks to the runtime through."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from mas.actors.mailbox import Overflow
from mas.errors import ConfigError
from mas.messages import Message, TaskResult

if TYPE_CHECKING:
    from mas.actors.cell import AgentCell
    from mas.actors.ref import AgentRef
    from mas.actors.system import ActorSystem

__all__ = ["Agent", "AgentContext", "HandlerResult", "Terminated"]

HandlerResult = Message | TaskResult | list[Message] | None

_TYPE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


class Agent:
    """Subclass this: set `type`, implement `handle_message`, optionally `start`/`stop`.

    One instance handles one message at a time. A new instance is created (and `start()`
    awaited) on every restart, so state that must survive a crash belongs in a store, not in
    attributes. `self.ctx` is set before `start()` runs.
    """

    type: ClassVar[str] = "agent"
    capabilities: ClassVar[tuple[str, ...]] = ()
    topics: ClassVar[tuple[str, ...]] = ()
    mailbox_capacity: ClassVar[int | None] = None
    overflow: ClassVar[Overflow | None] = None
    max_attempts: ClassVar[int | None] = None

    ctx: AgentContext

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type" not in cls.__dict__:
            cls.type = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
        if not isinstance(cls.type, str) or not _TYPE_RE.fullmatch(cls.type):
            raise ConfigError(
                f"{cls.__qualname__}.type = {cls.type!r} is not a valid agent type: use letters, "
                "digits, _ . - starting with a letter or _"
            )

    @property
    def id(self) -> str:
        """This agent's id (`agent:<id>` addresses it)."""
        return self.ctx.id

    async def start(self) -> None:
        """Called once per activation (spawn and every restart) before any message."""

    async def stop(self) -> None:
        """Called when the agent stops or before it is restarted; release resources here."""

    async def handle_message(self, message: Message) -> HandlerResult:
        """Handle one message; return None, a Message, a TaskResult or a list of Messages."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement handle_message")


class Terminated:
    """Delivered to watchers when a watched agent stops: `Terminated.from_message(m)`."""

    TYPE: ClassVar[str] = "mas.terminated"

    __slots__ = ("agent_id", "reason")

    def __init__(self, agent_id: str, reason: str) -> None:
        self.agent_id = agent_id
        self.reason = reason

    def to_message(self, watcher: str) -> Message:
        return Message(
            self.TYPE,
            {"agent_id": self.agent_id, "reason": self.reason},
            sender=f"agent:{self.agent_id}",
            target=watcher,
        )

    @classmethod
    def from_message(cls, message: Message) -> Terminated:
        return cls(str(message.payload["agent_id"]), str(message.payload["reason"]))


class AgentContext:
    """What an agent can do: send, ask, publish, spawn, watch, subscribe, stop, log.

    Messages sent while handling a message carry its trace_id (created on first need).
    """

    __slots__ = ("_cell", "_system")

    def __init__(self, cell: AgentCell) -> None:
        self._cell = cell
        self._system = cell.runtime.system  # the facade agents send through

    @property
    def id(self) -> str:
        return self._cell.id

    @property
    def address(self) -> str:
        return self._cell.address

    @property
    def runtime(self) -> ActorSystem:
        return self._system

    @property
    def self_ref(self) -> AgentRef:
        return self._cell.ref()

    @property
    def message(self) -> Message | None:
        """The message being handled right now, if any."""
        return self._cell.current

    @property
    def log(self) -> Any:
        """A structlog logger bound to this agent and the message being handled."""
        cell = self._cell
        bound = structlog.get_logger("mas.agent").bind(agent_id=cell.id, agent_type=cell.agent_type)
        current = cell.current
        if current is not None:
            bound = bound.bind(message_id=current.id, trace_id=cell.runtime.ensure_trace(current))
        return bound

    def _outgoing(self, message: Message) -> Message:
        """`message` with this agent as its sender and the current trace, when unset.

        A message already sent (forwarded, say) may still wait in another agent's mailbox:
        it is never changed, the fields are filled in on a copy.
        """
        current = self._cell.current
        fill_sender = message.sender is None
        fill_trace = message.trace_id is None and current is not None
        if not (fill_sender or fill_trace):
            return message
        if message.target is not None:
            message = message.copy()
        if fill_sender:
            message.sender = self._cell.address
        if fill_trace and current is not None:
            message.trace_id = self._cell.runtime.ensure_trace(current)
        return message

    async def send(self, target: str | AgentRef, message: Message) -> None:
        """Fire-and-forget to an address or ref (raises `UnknownAgent` when nobody answers)."""
        await self._system.tell(target, self._outgoing(message))

    async def ask(self, target: str | AgentRef, message: Message, timeout: float) -> Message:
        """Request/reply from inside a handler; raises `AskTimeout` or the remote error."""
        return await self._system.ask(target, self._outgoing(message), timeout=timeout)

    async def publish(self, topic: str, message: Message) -> None:
        """Send to every subscriber of `topic` (a concrete key such as `orders.created`)."""
        await self._system.publish(topic, self._outgoing(message))

    async def spawn(self, agent: Any, *, id: str | None = None, **options: Any) -> AgentRef:
        """Start another agent under this agent's supervisor."""
        return await self._cell.supervisor.spawn(agent, id=id, **options)

    def watch(self, ref: AgentRef) -> None:
        """Receive a `Terminated` message when `ref`'s agent stops."""
        ref.watch(self.self_ref)

    async def subscribe(self, pattern: str) -> None:
        """Receive messages published to topic keys matching `pattern` (`*`, `#` allowed)."""
        await self._system.subscribe(self._cell, pattern)

    def stop(self) -> None:
        """Stop this agent once the current message is handled (a normal exit)."""
        self._cell.stop_requested = True
