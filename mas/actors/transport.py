"""The transport port: what the actor core needs from whatever carries its messages.

A runtime hands its transport the messages whose address it cannot serve locally, and the
transport hands the runtime a `Delivery` for every message that arrives for an address the
runtime subscribed to. A delivery is settled exactly once: `ack` after the handler finished
and its effects were recorded, `retry` to try again after a delay, or `dead_letter`. Dead
letters the runtime records without a delivery go to `Transport.dead_letter`, so a transport
that keeps dead letters (RabbitMQ's queue) keeps all of them.

The protocols live here, with the core, and the implementations in `mas.transports`: the
core imports no transport, and a transport depends on the core, never the other way round.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from mas.actors.deadletters import DeadLetter
from mas.messages import Message

__all__ = ["Delivery", "Transport", "TransportNode"]


class Delivery(Protocol):
    """One received message, to be settled exactly once."""

    message: Message
    attempt: int
    redelivered: bool
    """Handed out before (to a node that may have handled it and died): ask the record."""
    claimed_elsewhere: bool
    """Another consumer took this message id first: this is a second copy of it."""

    async def ack(self) -> None:
        """The message was handled and its effects recorded: forget it."""

    async def retry(self, delay: float) -> None:
        """Deliver the message again after `delay` seconds with `attempt + 1`."""

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Give up: move the message to the dead-letter queue with the reason."""

    async def defer(self, delay: float) -> None:
        """Not taken now (its agent's mailbox is full): offer it again after `delay` seconds.

        The message waits in the broker, not on this node, and no attempt is counted: the
        handler never ran. A message waiting in the broker is not a failure, so this is what
        happens to a delivery that does not fit, whatever the mailbox's overflow policy
        (except `drop_oldest`, which makes room). Other messages of its queue may overtake it,
        as they overtake a retried one.
        """

    async def release(self) -> bool:
        """Not handled here: hand the message back to its queue for another node.

        Returns False when no other node could take it (a topic copy, a reply); the caller
        then dead-letters it. No attempt is counted: the handler never ran.
        """


class TransportNode(Protocol):
    """What a transport needs from the runtime it serves."""

    @property
    def node_id(self) -> str: ...

    def call_later(self, delay: float, job: Callable[[], Awaitable[None]]) -> None:
        """Run `job()` after `delay` seconds of the runtime's clock, as a task it owns."""

    async def dead_letter(
        self, delivery: Delivery, reason: str, *, agent_id: str | None = None
    ) -> None:
        """Give up on a delivery: record it (its task ends) and settle it as a dead letter."""

    async def receive(self, delivery: Delivery) -> None:
        """Accept one delivery; returns once it is queued, deferred (its mailbox was full)
        or settled. Never waits for room: one caller may feed every agent of the node."""

    def fail(self, error: BaseException) -> None:
        """A task of the transport crashed (a bug, not an outage): fail the runtime."""


@runtime_checkable
class Transport(Protocol):
    """Carries messages between runtimes; the runtime never imports a concrete one."""

    async def start(self, node: TransportNode) -> None:
        """Connect and begin handing deliveries for this node's subscriptions to `node`."""

    async def pause(self) -> None:
        """Stop taking new deliveries (shutdown drain); sends, settles and replies go on."""

    @property
    def ready(self) -> bool:
        """Connected and able to carry messages now (for readiness checks)."""

    async def close(self) -> None:
        """Stop consuming and disconnect; unsettled deliveries return to their queues."""

    async def send(self, message: Message, *, resent: bool = False) -> None:
        """Route `message` to `message.target` (agent, type, topic or reply address).

        `resent`: the message may have been sent (and handled) before; it was recovered from
        an outbox after its sender died. The receiver checks the record before handling it,
        as it does for a broker's redelivery.

        Raises:
            UnknownAgent: no queue or subscriber exists for an agent/type address.
            MessageTooLarge: the encoded message is over the cap.
            TransportError: the broker could not take it.
        """

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Keep a dead letter that no delivery of this transport carries, where this
        transport keeps dead letters (RabbitMQ: `agents.dead_letter`).

        The runtime calls it for what it gives up on by itself: a handler's output nobody can
        take, a local message out of attempts or left when its agent stopped. A delivery's own
        `dead_letter` covers the rest.

        Raises:
            TransportError: the broker could not take it (the runtime logs it; its in-memory
                record stays).
        """

    async def subscribe_agent(
        self, agent_id: str, agent_type: str, capacity: int | None = None
    ) -> None:
        """Consume messages for `agent:<agent_id>` and, competing, for `type:<agent_type>`.

        `capacity` is what the agent's mailbox holds: a broker hands this node at most that
        many of the agent's messages at a time (prefetch), and the rest wait in the broker.
        None: no bound of the agent's own (the transport's default prefetch).
        """

    async def unsubscribe_agent(self, agent_id: str, agent_type: str) -> None:
        """Stop consuming for that agent (its queued messages stay for another node)."""

    async def backlog(self, address: str) -> int | None:
        """Messages waiting in the broker for an agent or type address (not yet handed to
        any node); None when this transport cannot tell (no such queue, or no broker).

        Raises:
            TransportError: the broker could not be asked.
        """

    async def retire_agent(self, agent_id: str) -> bool:
        """The agent is gone for good (stopped, or its node was lost): remove its queue, so
        that a send to it fails at once instead of waiting for ever.

        Nothing is removed while any node still consumes the queue (a standby, or the agent
        itself on a node whose heartbeat merely lagged). What waited in it goes to the node's
        `dead_letter` (reason `agent_stopped`), so its tasks end visibly.

        Returns:
            True when the agent has no queue any more; False when a consumer keeps it.

        Raises:
            TransportError: the broker could not be asked (try again later).
        """

    async def subscribe_topic(self, pattern: str) -> None:
        """Receive every message published to a topic key matching `pattern`."""

    async def unsubscribe_topic(self, pattern: str) -> None:
        """Stop receiving a topic pattern."""
