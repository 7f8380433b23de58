"""In-process transport with the broker's semantics.

A `MemoryBroker` plays the part of a RabbitMQ vhost: several runtimes in one process that share
a broker behave like nodes of a cluster. Agent queues have a single active consumer (the other
subscribers wait as standbys and take over, with the queued messages, when it leaves), type
queues have competing consumers, topics fan out to every subscribed node, replies go to the
asking node. Unroutable sends raise `UnknownAgent`, as a mandatory publish would. With
`serialize=True` every message crosses as JSON, so code that would break on the wire breaks
here too.
"""

from __future__ import annotations

from collections import deque

from mas.errors import RuntimeNotRunning, UnknownAgent
from mas.messages import Message, parse_address, topic_matches
from mas.transports.base import DeadLetter, TrackedDelivery, TransportNode

__all__ = ["MemoryBroker", "MemoryDelivery", "MemoryTransport"]


class _Queue:
    """An agent queue (single active consumer) or a type queue (competing consumers).

    Kept small: one exists per agent id, and the backlog is allocated only when a message
    waits with no consumer.
    """

    __slots__ = ("backlog", "consumers", "next_consumer", "single_active")

    def __init__(self, single_active: bool) -> None:
        self.single_active = single_active
        self.consumers: list[MemoryTransport] = []
        self.backlog: deque[tuple[Message, int]] | None = None
        self.next_consumer = 0

    def park(self, message: Message, attempt: int) -> None:
        if self.backlog is None:
            self.backlog = deque()
        self.backlog.append((message, attempt))

    def pick(self) -> MemoryTransport | None:
        if not self.consumers:
            return None
        if self.single_active:
            return self.consumers[0]
        self.next_consumer = (self.next_consumer + 1) % len(self.consumers)
        return self.consumers[self.next_consumer]


class MemoryBroker:
    """Shared routing state for the memory transports of one process (like a vhost)."""

    def __init__(self, *, serialize: bool = False, max_bytes: int | None = None) -> None:
        self.serialize = serialize
        self.max_bytes = max_bytes
        self.dead_letters: list[DeadLetter] = []
        self._agents: dict[str, _Queue] = {}
        self._types: dict[str, _Queue] = {}
        self._nodes: dict[str, MemoryTransport] = {}

    def _encode(self, message: Message) -> Message:
        if not self.serialize:
            return message
        return Message.from_json(message.to_json(max_bytes=self.max_bytes))

    async def publish(self, message: Message, origin: str, attempt: int = 1) -> None:
        target = message.target
        if target is None:
            raise UnknownAgent("<no target>")
        address = parse_address(target)
        message = self._encode(message)
        if address.kind == "topic":
            for node_id, transport in list(self._nodes.items()):
                if node_id != origin and transport.wants_topic(address.value):
                    await transport.deliver(message, attempt, None)
            return
        if address.kind == "reply":
            node = self._nodes.get(address.value)
            if node is None:
                raise UnknownAgent(target)
            await node.deliver(message, attempt, None)
            return
        queues = self._agents if address.kind == "agent" else self._types
        queue = queues.get(address.value)
        if queue is None:
            raise UnknownAgent(target)
        await self._route(queue, message, attempt)

    async def _route(self, queue: _Queue, message: Message, attempt: int) -> None:
        consumer = queue.pick()
        if consumer is None:
            queue.park(message, attempt)
            return
        await consumer.deliver(message, attempt, queue)

    async def _consume(self, queue: _Queue, transport: MemoryTransport) -> None:
        if transport in queue.consumers:
            return
        queue.consumers.append(transport)
        if queue.single_active and queue.consumers[0] is not transport:
            return  # a standby: takes over when the active consumer leaves
        while queue.backlog and queue.consumers and queue.consumers[0] is transport:
            message, attempt = queue.backlog.popleft()
            await transport.deliver(message, attempt, queue)

    async def _leave(self, queue: _Queue, transport: MemoryTransport) -> None:
        if transport not in queue.consumers:
            return
        queue.consumers.remove(transport)
        if queue.consumers and queue.backlog:
            successor = queue.consumers[0]
            while queue.backlog and successor in queue.consumers:
                message, attempt = queue.backlog.popleft()
                await successor.deliver(message, attempt, queue)

    async def requeue(self, queue: _Queue | None, message: Message, attempt: int) -> None:
        """Put a message back (retry or redelivery) on the queue it came from."""
        if queue is None:
            await self.publish(message, origin="", attempt=attempt)
            return
        await self._route(queue, message, attempt)


class MemoryDelivery(TrackedDelivery):
    """A message handed to a node by the memory broker (which redelivers nothing: one process
    cannot crash apart from its consumers)."""

    __slots__ = ("_queue", "_transport")

    def __init__(
        self, message: Message, attempt: int, transport: MemoryTransport, queue: _Queue | None
    ) -> None:
        super().__init__(message, attempt, transport.unacked)
        self._transport = transport
        self._queue = queue

    async def ack(self) -> None:
        self._settle()

    async def retry(self, delay: float) -> None:
        if not self._settle():
            return
        broker = self._transport.broker
        message, attempt, queue = self.message, self.attempt + 1, self._queue
        self._transport.node.call_later(delay, lambda: broker.requeue(queue, message, attempt))

    async def dead_letter(self, letter: DeadLetter) -> None:
        if self._settle():
            self._transport.broker.dead_letters.append(letter)

    async def defer(self, delay: float) -> None:
        if not self._settle():
            return
        broker = self._transport.broker
        message, attempt, queue = self.message, self.attempt, self._queue
        self._transport.node.call_later(delay, lambda: broker.requeue(queue, message, attempt))

    async def release(self) -> bool:
        # Only to a standby: a queue nobody else consumes is gone once its last consumer
        # left (unlike a broker's durable queue), so the caller dead-letters instead.
        if self._queue is None or not self._queue.consumers:
            return False
        if self._settle():
            await self._transport.broker.requeue(self._queue, self.message, self.attempt)
        return True


class MemoryTransport:
    """One node's connection to a `MemoryBroker` (a private broker when none is given)."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker if broker is not None else MemoryBroker()
        self.unacked: set[MemoryDelivery] = set()
        self._node: TransportNode | None = None
        self._topics: dict[str, int] = {}
        self._agents: dict[str, str] = {}
        self._type_counts: dict[str, int] = {}

    @property
    def node(self) -> TransportNode:
        if self._node is None:
            raise RuntimeNotRunning("the memory transport is not started")
        return self._node

    async def start(self, node: TransportNode) -> None:
        self._node = node
        self.broker._nodes[node.node_id] = self

    @property
    def ready(self) -> bool:
        return self._node is not None

    async def pause(self) -> None:
        for agent_id, agent_type in list(self._agents.items()):
            await self.unsubscribe_agent(agent_id, agent_type)
        self._topics.clear()

    async def close(self) -> None:
        node = self._node
        if node is None:
            return
        for agent_id, agent_type in list(self._agents.items()):
            await self.unsubscribe_agent(agent_id, agent_type)
        self.broker._nodes.pop(node.node_id, None)
        self._topics.clear()
        # Like a closed AMQP channel: whatever was not settled goes back to its queue.
        pending, self.unacked = list(self.unacked), set()
        self._node = None
        for delivery in pending:
            delivery._settled = True
            await self.broker.requeue(delivery._queue, delivery.message, delivery.attempt)

    def wants_topic(self, key: str) -> bool:
        return any(topic_matches(pattern, key) for pattern in self._topics)

    async def deliver(self, message: Message, attempt: int, queue: _Queue | None) -> None:
        await self.node.receive(MemoryDelivery(message, attempt, self, queue))

    async def send(self, message: Message, *, resent: bool = False) -> None:
        # `resent` needs nothing here: nodes of one process share their fate, so a copy sent
        # again meets the receiving agent's own record of what it handled.
        await self.broker.publish(message, origin=self.node.node_id)

    async def dead_letter(self, letter: DeadLetter) -> None:
        # Beside the letters deliveries carried: the broker's list holds them all, as a
        # RabbitMQ dead-letter queue does (each runtime also records its own in memory).
        self.broker.dead_letters.append(letter)

    async def subscribe_agent(
        self, agent_id: str, agent_type: str, capacity: int | None = None
    ) -> None:
        # No prefetch to bound: this broker hands a message over as it is sent, and one that
        # finds the mailbox full is deferred (MemoryDelivery.defer) as on RabbitMQ.
        broker = self.broker
        if agent_id in self._agents:
            return
        agent_queue = broker._agents.get(agent_id)
        if agent_queue is None:
            agent_queue = broker._agents[agent_id] = _Queue(single_active=True)
        type_queue = broker._types.get(agent_type)
        if type_queue is None:
            type_queue = broker._types[agent_type] = _Queue(single_active=False)
        self._agents[agent_id] = agent_type
        self._type_counts[agent_type] = self._type_counts.get(agent_type, 0) + 1
        await broker._consume(agent_queue, self)
        await broker._consume(type_queue, self)

    async def unsubscribe_agent(self, agent_id: str, agent_type: str) -> None:
        broker = self.broker
        if self._agents.pop(agent_id, None) is None:
            return
        queue = broker._agents.get(agent_id)
        if queue is not None:
            await broker._leave(queue, self)
            if not queue.consumers and not queue.backlog:
                del broker._agents[agent_id]
        left = self._type_counts.get(agent_type, 1) - 1
        if left > 0:
            self._type_counts[agent_type] = left
        else:
            self._type_counts.pop(agent_type, None)
            type_queue = broker._types.get(agent_type)
            if type_queue is not None:
                await broker._leave(type_queue, self)
                if not type_queue.consumers and not type_queue.backlog:
                    del broker._types[agent_type]

    async def backlog(self, address: str) -> int | None:
        parsed = parse_address(address)
        if parsed.kind not in ("agent", "type"):
            return None
        queues = self.broker._agents if parsed.kind == "agent" else self.broker._types
        queue = queues.get(parsed.value)
        if queue is None:
            return None
        return len(queue.backlog) if queue.backlog is not None else 0

    async def retire_agent(self, agent_id: str) -> bool:
        broker = self.broker
        queue = broker._agents.get(agent_id)
        if queue is None:
            return True
        if queue.consumers:
            return False
        del broker._agents[agent_id]
        while queue.backlog:
            message, attempt = queue.backlog.popleft()
            delivery = MemoryDelivery(message, attempt, self, None)
            await self.node.dead_letter(delivery, "agent_stopped", agent_id=agent_id)
        return True

    async def subscribe_topic(self, pattern: str) -> None:
        self._topics[pattern] = self._topics.get(pattern, 0) + 1

    async def unsubscribe_topic(self, pattern: str) -> None:
        count = self._topics.get(pattern, 0) - 1
        if count > 0:
            self._topics[pattern] = count
        else:
            self._topics.pop(pattern, None)
