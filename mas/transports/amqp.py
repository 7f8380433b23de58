"""RabbitMQ transport (aio-pika): the same semantics as the memory transport, across processes.

Topology (every name starts with `MAS_AMQP__PREFIX`, empty by default):

- exchange `agents.direct` (direct): `agent.<id>` -> queue `agent.<id>` (quorum, single active
  consumer: one activation per agent id across the cluster, failover to a standby node);
  `type.<type>` -> queue `agent_type.<type>` (competing consumers); `reply.<node>` -> the
  node's exclusive reply queue (answers to its `ask`s);
- exchange `agents.topic` (topic): every node binds its exclusive topic queue with the patterns
  its agents subscribed to;
- exchange `agents.delay` (headers): retries wait in `agents.delay.<ms>` queues whose message
  TTL dead-letters them back to `agents.direct` with their original routing key;
- exchange `agents.dlx` (fanout) -> queue `agents.dead_letter` (classic, bounded by the
  `dead_letter_*` settings: length, bytes, TTL, drop-head): dead letters with the reason in
  their headers, bodies cut to `dead_letter_max_body`; every agent and type queue dead-letters
  there too (a quorum queue's delivery limit, for example).

Publishes are persistent, `mandatory` (an address nobody serves raises `UnknownAgent`) and
confirmed, bounded by `publish_timeout` however the broker behaves (blocked, restarting). A
delivery is acknowledged only when the runtime settles it: after the handler ran and its
effects were recorded. A node takes at most an agent's mailbox capacity of its messages at a
time (per-consumer prefetch, one consuming channel per prefetch count); a delivery that still
finds the mailbox full is handed back through a delay queue without counting an attempt. The
attempt count travels in the `x-mas-attempt` header. Bodies are the message's JSON; never
pickle. Bodies other clients publish in the original design's format are read by
`Message.from_wire`: a bare agent id as sender, a missing target (the address of the queue it
came from), a naive timestamp, and no `id` — then the AMQP `message_id` property if its
publisher set one, else a UUID derived from the body's bytes, so two id-less bodies with
identical bytes are one message (`mas.messages.body_id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import shlex
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import aio_pika
import structlog
from aio_pika import DeliveryMode, ExchangeType
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.channel import Channel
from aio_pika.exceptions import (
    AMQPError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
    PublishError,
)
from aiormq.exceptions import ChannelInvalidStateError

from mas.actors.workflow import dedupe_key
from mas.config import AmqpSettings, masked_url
from mas.errors import (
    InvalidMessage,
    MasError,
    MessageTooLarge,
    RuntimeNotRunning,
    TransportError,
    UnknownAgent,
)
from mas.messages import Message, parse_address
from mas.observability.outages import Outage
from mas.observability.tracing import TRACEPARENT
from mas.transports.base import DeadLetter, TrackedDelivery, TransportNode

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from mas.cluster import DedupeClaims

__all__ = ["AmqpDelivery", "AmqpTransport", "probe"]

_log = structlog.get_logger("mas.transports.amqp")

ATTEMPT_HEADER = "x-mas-attempt"
ORIGIN_HEADER = "x-mas-origin"
DELAY_HEADER = "x-mas-delay"
# On a copy handed back because its mailbox was full: what was known about it then.
DEFERRED_HEADER = "x-mas-deferred"
RESENT_HEADER = "x-mas-resent"
_CLAIMED, _DUPLICATE, _CHECK = "claimed", "duplicate", "check"

# Routing keys on agents.direct that name the address their queue serves.
_SERVED_KINDS = frozenset(("agent", "type", "reply"))

# The channel or connection under a delivery or a publish went away.
_GONE = (AMQPError, ChannelInvalidStateError, ConnectionError)
# What aio-pika, aiormq and the socket under them raise when the broker cannot be reached,
# refuses, closes the channel or does not answer in time: what this boundary maps to
# `TransportError`, in `_broker_errors` (and in `_publish`, once its retries run out).
_BROKER_ERRORS = (OSError, TimeoutError, *_GONE)
# Failures a publish survives by trying again (the robust connection reconnects meanwhile).
_RETRYABLE = (DeliveryError, *_BROKER_ERRORS)
_CHECK_BROKER = "; check MAS_AMQP_URL and that the broker runs"


@contextlib.contextmanager
def _broker_errors(
    failed: str, hint: str = "", *, also: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """The one place where the broker client's errors become `TransportError`.

    `failed` says what failed (the broker client's error follows it), `hint` what to check;
    `also`: more exception types that mean the same here. mas's own errors pass unchanged:
    they are mapped already (a `StoreTimeout` is a TimeoutError too).
    """
    mapped: tuple[type[Exception], ...] = (*_BROKER_ERRORS, *also)
    try:
        yield
    except MasError:
        raise
    except mapped as exc:
        raise TransportError(f"{failed}: {exc!r}{hint}") from exc


async def probe(url: str, timeout: float) -> None:
    """Connect to the broker and leave: a start-up check that fails with one clear line.

    Raises:
        TransportError: the broker cannot be reached (or refuses the credentials) within
            `timeout` seconds; the URL's password is masked.
    """
    # aiormq logs the failure itself (as plain text, before any JSON logging is set up);
    # the error raised here says it once, with the URL masked.
    aiormq_log = logging.getLogger("aiormq.connection")
    was_disabled, aiormq_log.disabled = aiormq_log.disabled, True
    try:
        with _broker_errors(
            f"cannot connect to RabbitMQ at {masked_url(url)}", _CHECK_BROKER, also=(ValueError,)
        ):
            connection = await aio_pika.connect(url, timeout=timeout)
    finally:
        aiormq_log.disabled = was_disabled
    await connection.close()


def _delay_ms(delay: float) -> int:
    """Retry delays rounded to two significant digits, so a few delay queues serve them all."""
    ms = max(1, round(delay * 1000))
    digits = int(math.log10(ms)) + 1
    if digits <= 2:
        return ms
    scale = 10 ** (digits - 2)
    return int(round(ms / scale) * scale)


class AmqpDelivery(TrackedDelivery):
    """A message consumed from RabbitMQ; settling it acks the broker's delivery."""

    __slots__ = ("_incoming", "_transport", "claimed_elsewhere", "redelivered")

    def __init__(
        self,
        message: Message,
        attempt: int,
        incoming: AbstractIncomingMessage,
        transport: AmqpTransport,
    ) -> None:
        super().__init__(message, attempt, transport.unacked)
        self._incoming = incoming
        self._transport = transport
        # The broker gave it to a consumer before, which may have handled it and died: the
        # runtime asks the record before handling it again.
        self.redelivered = bool(incoming.redelivered)
        # Another consumer claimed this message id first (Redis): a second copy of it.
        self.claimed_elsewhere = False

    async def ack(self) -> None:
        if self._settle():
            await self._transport._ack(self._incoming)

    async def retry(self, delay: float) -> None:
        if not self._settle():
            return
        incoming = self._incoming
        async with self._back_to_queue_on_failure():
            await self._transport._publish_delayed(
                incoming.body, self.message, incoming.routing_key or "", self.attempt + 1, delay
            )
        await self._transport._ack(self._incoming)

    async def defer(self, delay: float) -> None:
        if not self._settle():
            return
        incoming = self._incoming
        # The copy must not be claimed again (this node may hold its claim) nor lose what was
        # known: a second copy stays a duplicate, a redelivered one is still checked.
        if self.claimed_elsewhere:
            verdict = _DUPLICATE
        elif self.redelivered:
            verdict = _CHECK
        else:
            verdict = _CLAIMED
        async with self._back_to_queue_on_failure():
            await self._transport._publish_delayed(
                incoming.body,
                self.message,
                incoming.routing_key or "",
                self.attempt,
                delay,
                {DEFERRED_HEADER: verdict},
            )
        await self._transport._ack(incoming)

    async def dead_letter(self, letter: DeadLetter) -> None:
        if not self._settle():
            return
        async with self._back_to_queue_on_failure():
            await self._transport.publish_dead_letter(
                self._incoming.body,
                self._incoming.routing_key or "",
                reason=letter.reason,
                agent_id=letter.agent_id,
                error=_error_of(letter),
                attempts=letter.attempts,
            )
        await self._transport._ack(self._incoming)

    async def release(self) -> bool:
        if not self._transport.from_work_queue(self._incoming):
            return False
        if self._settle():
            await self._transport._nack_requeue(self._incoming)
        return True

    @contextlib.asynccontextmanager
    async def _back_to_queue_on_failure(self) -> AsyncIterator[None]:
        """The settled delivery's replacement could not be published: requeue the original
        rather than hold it unacknowledged until the channel closes."""
        try:
            yield
        except BaseException:
            await self._transport._nack_requeue(self._incoming)
            raise


class AmqpTransport:
    """One node's connection to RabbitMQ (see the module docstring for the topology)."""

    def __init__(
        self,
        url: str,
        settings: AmqpSettings | None = None,
        *,
        max_bytes: int | None = None,
        redis_url: str | None = None,
        dedupe_ttl: float = 3600.0,
    ) -> None:
        self._url = url
        self.settings = settings if settings is not None else AmqpSettings()
        self.max_bytes = max_bytes
        self.prefix = self.settings.prefix
        self.unacked: set[AmqpDelivery] = set()
        self._redis_url = redis_url
        self.outage = Outage("broker", "amqp")
        """Logs once when RabbitMQ stops answering (connection lost, publishes unconfirmed),
        once when it answers again."""
        self._dedupe_ttl = dedupe_ttl
        self._claims: DedupeClaims | None = None
        self._redis: Redis | None = None
        self.declared_queues: set[str] = set()
        self._node: TransportNode | None = None
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        # One consuming channel per prefetch count: a robust channel restores the QoS last set
        # on it for every consumer it restores, so consumers with different prefetch counts
        # sharing a channel would all get the last one after a reconnection.
        self._consume_channels: dict[int, AbstractChannel] = {}
        self._channel_lock = asyncio.Lock()
        self._exchanges: dict[str, AbstractExchange] = {}
        self._topic_queue: AbstractQueue | None = None
        self._topic_tag: str | None = None
        self._topics: dict[str, int] = {}
        self._agents: dict[str, tuple[str, str]] = {}  # agent id -> (type, consumer tag)
        self._types: dict[str, tuple[int, str]] = {}  # type -> (local agents, consumer tag)
        self._cancelled: set[str] = set()
        # The queue object each consumer was registered on: the robust channel restores a
        # consumer after a reconnection unless it was cancelled through that same object.
        self._consumer_queues: dict[str, AbstractQueue] = {}
        self._delay_queues: set[int] = set()
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    # -- names -------------------------------------------------------------------------------

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def node(self) -> TransportNode:
        if self._node is None:
            raise RuntimeNotRunning("the RabbitMQ transport is not started")
        return self._node

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, node: TransportNode) -> None:
        """Connect, declare what this node uses and start consuming its replies and topics.

        Raises:
            TransportError: the broker cannot be reached, or refused (or did not answer) a
                declaration within `connect_timeout`.
        """
        s = self.settings
        with _broker_errors(
            f"cannot connect to RabbitMQ at {masked_url(self._url)}", _CHECK_BROKER
        ):
            connection = await aio_pika.connect_robust(
                self._url,
                timeout=s.connect_timeout,
                client_properties={"connection_name": node.node_id},
            )
        with _broker_errors(f"setting up queues on RabbitMQ at {masked_url(self._url)} failed"):
            await self._set_up(connection, node)
        _log.info(
            "amqp_connected", url=masked_url(self._url), prefix=self.prefix, node_id=node.node_id
        )

    async def _set_up(self, connection: AbstractRobustConnection, node: TransportNode) -> None:
        """Channels, exchanges and this node's queues on a fresh connection (see `start`)."""
        s = self.settings
        self._connection = connection
        self._node = node
        connection.close_callbacks.add(self._connection_lost)
        connection.reconnect_callbacks.add(self._reconnected)
        publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
        self._publish_channel = publish
        consume = await self._consume_channel(s.prefetch)
        declare = publish.declare_exchange
        self._exchanges = {
            "direct": await declare(self.name("agents.direct"), ExchangeType.DIRECT, durable=True),
            "topic": await declare(self.name("agents.topic"), ExchangeType.TOPIC, durable=True),
            "delay": await declare(self.name("agents.delay"), ExchangeType.HEADERS, durable=True),
            "dlx": await declare(self.name("agents.dlx"), ExchangeType.FANOUT, durable=True),
        }
        await self._declare_dead_letters(publish)
        # Replies and topic copies belong to this node only: exclusive queues vanish with it.
        node_id = node.node_id
        replies = await consume.declare_queue(self.name(f"node.{node_id}.replies"), exclusive=True)
        await replies.bind(self.name("agents.direct"), routing_key=f"reply.{node_id}")
        await replies.consume(self._on_message)
        self._topic_queue = await consume.declare_queue(
            self.name(f"node.{node_id}.topics"), exclusive=True
        )
        self._topic_tag = await self._topic_queue.consume(self._on_message)
        if self._redis_url is not None:
            from mas.cluster import DedupeClaims, connect, key_prefix

            self._redis = connect(self._redis_url, client_name=node_id)
            prefix = key_prefix(self.prefix)
            self._claims = DedupeClaims(self._redis, prefix=prefix, owner=node_id)
        self._pump = asyncio.get_running_loop().create_task(self._run_pump(), name="mas-amqp-pump")
        self._pump.add_done_callback(self._pump_ended)

    def dead_letter_arguments(self) -> dict[str, Any]:
        """The bounds `agents.dead_letter` is declared with (from the `dead_letter_*` settings)."""
        s = self.settings
        arguments: dict[str, Any] = {}
        if s.dead_letter_max_length:
            arguments["x-max-length"] = s.dead_letter_max_length
        if s.dead_letter_max_bytes:
            arguments["x-max-length-bytes"] = s.dead_letter_max_bytes
        if arguments:
            arguments["x-overflow"] = "drop-head"
        if s.dead_letter_ttl:
            arguments["x-message-ttl"] = max(1, round(s.dead_letter_ttl * 1000))
        return arguments

    async def _declare_dead_letters(self, publish: AbstractChannel) -> None:
        """Declare `agents.dead_letter` (a classic queue, as it always was) with its bounds.

        A queue that exists with other arguments (declared by an older mas, or with other
        bounds) makes the broker refuse the declaration with PRECONDITION_FAILED and close
        the channel. A node must still start: it then uses the queue as it is and logs how
        to bound it with a policy, which applies without redeclaring. The attempt runs on a
        throwaway channel, so the refusal closes nothing the node keeps.

        Raises:
            TimeoutError: the broker did not answer within `connect_timeout`.
        """
        name = self.name("agents.dead_letter")
        arguments = self.dead_letter_arguments()
        timeout = self.settings.connect_timeout
        try:
            async with self._throwaway_channel() as probe:
                await probe.declare_queue(name, durable=True, arguments=arguments, timeout=timeout)
        except ChannelPreconditionFailed as exc:
            _log.warning(
                "amqp_dead_letter_queue_not_bounded",
                queue=name,
                error=str(exc),
                hint=self._policy_hint(name, arguments),
            )
            async with self._throwaway_channel() as channel:
                queue = await channel.declare_queue(name, passive=True, timeout=timeout)
                await queue.bind(self.name("agents.dlx"), timeout=timeout)
        else:
            # Declared again on the node's own channel, so a reconnection restores it.
            queue = await publish.declare_queue(
                name, durable=True, arguments=arguments, timeout=timeout
            )
            await queue.bind(self._exchanges["dlx"], timeout=timeout)
        self.declared_queues.add(name)

    def _policy_hint(self, queue: str, arguments: dict[str, Any]) -> str:
        definition = {key.removeprefix("x-"): value for key, value in arguments.items()}
        vhost = unquote(urlsplit(self._url).path[1:]) or "/"
        return (
            f"the queue was declared before with other arguments; to bound it, run: "
            f"rabbitmqctl set_policy -p {shlex.quote(vhost)} --apply-to queues "
            f"mas-dead-letters {shlex.quote('^' + re.escape(queue) + '$')} "
            f"{shlex.quote(json.dumps(definition, separators=(',', ':')))}"
        )

    @contextlib.asynccontextmanager
    async def _throwaway_channel(self) -> AsyncIterator[AbstractChannel]:
        """A plain (not robust) channel for a declaration that may fail and close it: a robust
        one would reopen itself after the failure and stay open for good."""
        assert self._connection is not None
        channel = Channel(self._connection, publisher_confirms=False)
        async with asyncio.timeout(self.settings.connect_timeout):
            await channel
        try:
            yield channel
        finally:
            if not channel.is_closed:
                await channel.close()

    def _connection_lost(self, _connection: object, error: BaseException | None) -> None:
        if self._connection is not None and error is not None:  # not our own close()
            self.outage.failed("connection", error)

    def _reconnected(self, _connection: object) -> None:
        self.outage.ok()

    @property
    def ready(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    async def pause(self) -> None:
        if self._connection is None:
            return
        for agent_id, (agent_type, _) in list(self._agents.items()):
            await self.unsubscribe_agent(agent_id, agent_type)
        if self._topic_tag is not None and self._topic_queue is not None:
            tag, self._topic_tag = self._topic_tag, None
            self._cancelled.add(tag)
            await self._topic_queue.cancel(tag)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None
        # Closing the channels hands every unsettled delivery back to its queue.
        self.unacked.clear()
        await connection.close()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis, self._claims = None, None
        self._node = None

    # -- sending -----------------------------------------------------------------------------

    async def send(self, message: Message, *, resent: bool = False) -> None:
        target = message.target
        if target is None:
            raise UnknownAgent("<no target>")
        address = parse_address(target)
        body = message.to_json(max_bytes=self.max_bytes)
        if address.kind == "topic":
            await self._publish("topic", body, address.value, message, 1, mandatory=False)
            return
        await self._publish(
            "direct",
            body,
            f"{address.kind}.{address.value}",
            message,
            1,
            headers={RESENT_HEADER: True} if resent else None,
        )

    def _amqp_message(
        self, body: bytes, message: Message | None, headers: dict[str, Any]
    ) -> aio_pika.Message:
        return aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message.id if message is not None else None,
            correlation_id=message.correlation_id if message is not None else None,
            headers=headers,
        )

    async def _publish(
        self,
        exchange: str,
        body: bytes,
        routing_key: str,
        message: Message | None,
        attempt: int,
        *,
        mandatory: bool = True,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Publish with confirms; retried across reconnects until `publish_timeout` runs out."""
        all_headers: dict[str, Any] = {ATTEMPT_HEADER: attempt, ORIGIN_HEADER: self.node.node_id}
        if message is not None and message.trace_id:
            all_headers["trace_id"] = message.trace_id
            traceparent = message.metadata.get(TRACEPARENT)
            if traceparent is not None:
                # For tools that read the broker's headers; mas reads it from the metadata.
                all_headers[TRACEPARENT] = traceparent
        if headers:
            all_headers.update(headers)
        amqp_message = self._amqp_message(body, message, all_headers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.publish_timeout
        pause = 0.05
        while True:
            left = deadline - loop.time()
            try:
                await self._exchanges[exchange].publish(
                    amqp_message, routing_key, mandatory=mandatory, timeout=max(left, 0.001)
                )
                self.outage.ok()
                return
            except PublishError as exc:
                self.outage.ok()  # the broker answered: nobody serves that address
                raise UnknownAgent(_address_of(routing_key)) from exc
            except _RETRYABLE as exc:
                if loop.time() + pause >= deadline:
                    self.outage.failed("publish", exc)
                    raise TransportError(
                        f"RabbitMQ did not confirm the publish to {routing_key!r} within "
                        f"{self.settings.publish_timeout}s: {exc!r}"
                    ) from exc
                # The outage is logged once (when it is one); each retry is a debug line.
                _log.debug("amqp_publish_retry", routing_key=routing_key, error=repr(exc))
            await asyncio.sleep(pause)  # the robust connection reconnects meanwhile
            pause = min(pause * 2, 1.0)

    async def _publish_delayed(
        self,
        body: bytes,
        message: Message,
        routing_key: str,
        attempt: int,
        delay: float,
        headers: dict[str, Any] | None = None,
    ) -> None:
        ms = _delay_ms(delay)
        if ms not in self._delay_queues:
            await self._declare_delay_queue(ms)
        all_headers = {DELAY_HEADER: str(ms), **(headers or {})}
        try:
            await self._publish("delay", body, routing_key, message, attempt, headers=all_headers)
        except UnknownAgent:
            # The delay queue expired since it was declared: declare it again, once.
            await self._declare_delay_queue(ms)
            await self._publish("delay", body, routing_key, message, attempt, headers=all_headers)

    async def _declare_delay_queue(self, ms: int) -> None:
        channel = self._publish_channel
        assert channel is not None
        queue = await channel.declare_queue(
            self.name(f"agents.delay.{ms}"),
            durable=True,
            arguments={
                "x-message-ttl": ms,
                "x-dead-letter-exchange": self.name("agents.direct"),
                # An idle delay queue removes itself, long after its last message left.
                "x-expires": max(ms * 10, 3_600_000),
            },
        )
        await queue.bind(
            self._exchanges["delay"], arguments={"x-match": "all", DELAY_HEADER: str(ms)}
        )
        self._delay_queues.add(ms)
        self.declared_queues.add(queue.name)

    async def publish_dead_letter(
        self,
        body: bytes,
        routing_key: str,
        *,
        reason: str,
        agent_id: str | None = None,
        error: str | None = None,
        attempts: int = 0,
    ) -> None:
        """Put a body in `agents.dead_letter` with the reason in its `x-mas-*` headers.

        A body over `dead_letter_max_body` is cut to it; `x-mas-truncated` and
        `x-mas-body-size` (the full size in bytes) then say so.
        """
        headers: dict[str, Any] = {
            "x-mas-reason": reason,
            "x-mas-routing-key": routing_key,
            "x-mas-attempts": attempts,
        }
        if agent_id is not None:
            headers["x-mas-agent-id"] = agent_id
        if error is not None:
            headers["x-mas-error"] = error[:1000]
        cap = self.settings.dead_letter_max_body
        if cap and len(body) > cap:
            # A poison message can be huge: what it was shows in its first bytes.
            headers["x-mas-body-size"] = len(body)
            headers["x-mas-truncated"] = True
            body = body[:cap]
        await self._publish("dlx", body, routing_key, None, attempts, headers=headers)

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Publish a dead letter the runtime recorded without a delivery (a handler's reply
        nobody serves, a local message out of attempts) to `agents.dead_letter`.

        Raises:
            InvalidMessage: the message cannot be written as JSON.
            TransportError: not confirmed within `publish_timeout`.
        """
        message = letter.message
        await self.publish_dead_letter(
            message.to_json(),
            _routing_key_of(message.target),
            reason=letter.reason,
            agent_id=letter.agent_id,
            error=_error_of(letter),
            attempts=letter.attempts,
        )

    async def _ack(self, incoming: AbstractIncomingMessage) -> None:
        try:
            await incoming.ack()
        except _GONE as exc:
            # The channel that carried it is gone, so the broker already requeued it; the
            # redelivery is recognised by its message id and not handled twice.
            _log.warning("amqp_ack_lost", message_id=incoming.message_id, error=repr(exc))

    async def _nack_requeue(self, incoming: AbstractIncomingMessage) -> None:
        try:
            await incoming.nack(requeue=True)
        except _GONE as exc:
            # Its channel is gone: the broker requeued it already.
            _log.warning("amqp_nack_lost", message_id=incoming.message_id, error=repr(exc))

    # -- receiving ---------------------------------------------------------------------------

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        # aiormq runs each delivery's callback as its own task; queueing before any await keeps
        # the broker's order, which a mailbox that blocks could otherwise shuffle.
        self._inbox.put_nowait(incoming)

    async def _run_pump(self) -> None:
        while True:
            incoming = await self._inbox.get()
            try:
                await self._receive(incoming)
            except asyncio.CancelledError:
                raise
            except Exception:
                # One delivery that breaks must not stop the node receiving the others.
                _log.exception("amqp_receive_failed", message_id=incoming.message_id)

    def _pump_ended(self, pump: asyncio.Task[None]) -> None:
        """The pump stopped on its own (a bug): without it nothing more is received, so
        the runtime fails rather than going on deaf."""
        if pump.cancelled() or (error := pump.exception()) is None or self._node is None:
            return
        _log.error("amqp_pump_crashed", error_type=type(error).__name__, error=str(error))
        self._node.fail(error)

    async def _receive(self, incoming: AbstractIncomingMessage) -> None:
        if incoming.consumer_tag in self._cancelled:
            # Delivered just before this node stopped consuming that queue: back for another.
            await self._nack_requeue(incoming)
            return
        headers = incoming.headers or {}
        origin = headers.get(ORIGIN_HEADER)
        if incoming.exchange == self.name("agents.topic") and origin == self.node.node_id:
            await self._ack(incoming)  # this node's own broadcast, already delivered locally
            return
        message = await self._decode(incoming, self._served(incoming))
        if message is None:
            return
        attempt = _attempt(headers.get(ATTEMPT_HEADER))
        delivery = AmqpDelivery(message, attempt, incoming, self)
        verdict = headers.get(DEFERRED_HEADER)
        if verdict is not None:
            # Handed back because a mailbox was full: already judged, never claimed again.
            delivery.claimed_elsewhere = verdict == _DUPLICATE
            delivery.redelivered = delivery.redelivered or verdict == _CHECK
        else:
            if headers.get(RESENT_HEADER):
                # Recovered from a dead sender's outbox: an earlier copy may have been handled
                # (the record knows) or be in flight right now (its claim knows).
                delivery.redelivered = True
            if (
                self._claims is not None
                and attempt == 1
                and (not incoming.redelivered or headers.get(RESENT_HEADER))
                and self.from_work_queue(incoming)  # topic copies are all alike; replies unique
            ):
                await self._claim(delivery)
        await self.node.receive(delivery)

    async def _decode(
        self, incoming: AbstractIncomingMessage, served: str | None
    ) -> Message | None:
        """The delivery's message; None when its body is not one (it is dead-lettered with
        reason `invalid_message` at once and acknowledged: no retry can make it valid)."""
        try:
            return Message.from_wire(
                incoming.body,
                max_bytes=self.max_bytes,
                message_id=incoming.message_id,
                served=served,
            )
        except (InvalidMessage, MessageTooLarge) as exc:
            _log.warning(
                "amqp_undecodable_message",
                routing_key=incoming.routing_key,
                message_id=incoming.message_id,
                error=str(exc),
            )
            await self.publish_dead_letter(
                incoming.body,
                incoming.routing_key or "",
                reason="invalid_message",
                error=f"{type(exc).__name__}: {exc}",
            )
            await self._ack(incoming)
            return None

    def _served(self, incoming: AbstractIncomingMessage) -> str | None:
        """The address the delivery's queue serves, from its routing key (`agent.x` is
        `agent:x`, a topic key `k` is `topic:k`): a missing target stands for it."""
        key = incoming.routing_key or ""
        if incoming.exchange == self.name("agents.topic"):
            return f"topic:{key}" if key else None
        kind, _, value = key.partition(".")
        if incoming.exchange == self.name("agents.direct") and value and kind in _SERVED_KINDS:
            return f"{kind}:{value}"
        return None

    def from_work_queue(self, incoming: AbstractIncomingMessage) -> bool:
        """Whether it came from an agent or type queue (not a node's reply or topic queue)."""
        return incoming.exchange == self.name("agents.direct") and not (
            incoming.routing_key or ""
        ).startswith("reply.")

    @property
    def idle(self) -> bool:
        """No delivery waits in this node's inbox or for its settlement."""
        return not self.unacked and self._inbox.empty()

    async def queue_depths(self) -> dict[str, int]:
        """Messages ready in each queue this node declared (for metrics and tests)."""
        if self._connection is None:
            return {}
        depths: dict[str, int] = {}
        for name in sorted(self.declared_queues):
            # A passive declare of a missing queue closes its channel: use a throwaway one.
            try:
                async with self._throwaway_channel() as channel:
                    queue = await channel.declare_queue(
                        name, passive=True, timeout=self.settings.connect_timeout
                    )
                    depths[name] = queue.declaration_result.message_count or 0
            except AMQPError:
                pass  # deleted meanwhile (an expired delay queue): nothing waits there
        return depths

    async def backlog(self, address: str) -> int | None:
        """Ready messages in the queue serving an agent or type address (a passive declare
        on a throwaway channel: a round trip, so callers cache it)."""
        parsed = parse_address(address)
        if parsed.kind == "agent":
            name = self.name(f"agent.{parsed.value}")
        elif parsed.kind == "type":
            name = self.name(f"agent_type.{parsed.value}")
        else:
            return None
        if self._connection is None:
            raise TransportError("the RabbitMQ transport is not started")
        with _broker_errors(f"reading the depth of {name!r} failed"):
            try:
                async with self._throwaway_channel() as channel:
                    queue = await channel.declare_queue(
                        name, passive=True, timeout=self.settings.connect_timeout
                    )
            except ChannelNotFoundEntity:
                return None
        return queue.declaration_result.message_count or 0

    async def _claim(self, delivery: AmqpDelivery) -> None:
        """Cluster-wide dedupe of a first delivery: the first consumer of a message id wins.

        A later copy of it (published twice, or under another routing key: the id alone is
        the key) is a duplicate: the first consumer's copy is handled, or comes back flagged
        `redelivered` if that consumer dies first. When Redis cannot answer, the runtime asks
        the database's record instead. A parked handler's wake-up is claimed under its own
        token (`dedupe_key`): it is the message again, not a copy of the handling that parked.
        """
        assert self._claims is not None
        claim = await self._claims.claim(dedupe_key(delivery.message), ttl=self._dedupe_ttl)
        if claim.duplicate:
            delivery.claimed_elsewhere = True
        elif claim.unknown:
            delivery.redelivered = True

    # -- subscriptions -----------------------------------------------------------------------

    def _queue_arguments(self, *, single_active: bool) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-queue-type": self.settings.queue_type,
            "x-dead-letter-exchange": self.name("agents.dlx"),
        }
        if single_active:
            arguments["x-single-active-consumer"] = True
        return arguments

    async def _consume_channel(self, prefetch: int) -> AbstractChannel:
        """The channel whose consumers each take at most `prefetch` unacknowledged deliveries
        (RabbitMQ applies a channel's QoS to each consumer started on it afterwards)."""
        async with self._channel_lock:
            channel = self._consume_channels.get(prefetch)
            if channel is None:
                assert self._connection is not None
                channel = await self._connection.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=prefetch)
                self._consume_channels[prefetch] = channel
            return channel

    async def _consume(
        self, queue_name: str, routing_key: str, *, single_active: bool, prefetch: int
    ) -> str:
        channel = await self._consume_channel(prefetch)
        queue = await channel.declare_queue(
            queue_name, durable=True, arguments=self._queue_arguments(single_active=single_active)
        )
        await queue.bind(self.name("agents.direct"), routing_key=routing_key)
        self.declared_queues.add(queue_name)
        tag = await queue.consume(self._on_message)
        self._consumer_queues[tag] = queue
        return tag

    async def _cancel(self, consumer_tag: str) -> None:
        self._cancelled.add(consumer_tag)
        # Through the queue object that registered the consumer: a new one (`get_queue`) would
        # leave it registered there, the robust connection would restore it after a
        # reconnection, and this node would take the agent's messages again (and requeue them
        # forever, its tag being cancelled).
        queue = self._consumer_queues.pop(consumer_tag, None)
        if queue is not None:  # None: not consuming under that tag (nothing to cancel)
            await queue.cancel(consumer_tag)

    async def subscribe_agent(
        self, agent_id: str, agent_type: str, capacity: int | None = None
    ) -> None:
        if agent_id in self._agents:
            return
        # What the mailbox cannot hold waits in the broker. The type queue's consumer is
        # bounded by the first local agent of the type (the one it starts with).
        prefetch = min(self.settings.prefetch, capacity or self.settings.prefetch)
        tag = await self._consume(
            self.name(f"agent.{agent_id}"),
            f"agent.{agent_id}",
            single_active=True,
            prefetch=prefetch,
        )
        self._agents[agent_id] = (agent_type, tag)
        count, type_tag = self._types.get(agent_type, (0, ""))
        if count == 0:
            type_tag = await self._consume(
                self.name(f"agent_type.{agent_type}"),
                f"type.{agent_type}",
                single_active=False,
                prefetch=prefetch,
            )
        self._types[agent_type] = (count + 1, type_tag)

    async def unsubscribe_agent(self, agent_id: str, agent_type: str) -> None:
        entry = self._agents.pop(agent_id, None)
        if entry is None or self._connection is None:
            return
        await self._cancel(entry[1])
        count, type_tag = self._types.get(agent_type, (1, ""))
        if count > 1:
            self._types[agent_type] = (count - 1, type_tag)
            return
        self._types.pop(agent_type, None)
        await self._cancel(type_tag)

    async def retire_agent(self, agent_id: str) -> bool:
        """Remove `agent.<id>` unless it has a consumer; dead-letter what waited in it.

        The binding goes first, so a publish from then on is returned (UnknownAgent) rather
        than queued behind the drain; the queue is deleted once empty. The drain consumes
        (quorum queues with a single active consumer refuse `basic.get`); with no other
        consumer, this one is the active one. A message another node's retry or deferral
        brings back later finds no queue: callers retire only after those delays have
        passed (see `StoreJournal`).

        Raises:
            TransportError: the transport is not started, or the broker failed or did not
                answer within `connect_timeout`.
        """
        if self._connection is None:
            raise TransportError("the RabbitMQ transport is not started")
        name = self.name(f"agent.{agent_id}")
        timeout = self.settings.connect_timeout
        with _broker_errors(f"retiring the queue of agent {agent_id!r} failed"):
            try:
                async with self._throwaway_channel() as channel:
                    queue = await channel.declare_queue(name, passive=True, timeout=timeout)
                    if queue.declaration_result.consumer_count:
                        return False
                    await queue.unbind(
                        self.name("agents.direct"), routing_key=f"agent.{agent_id}", timeout=timeout
                    )
                    waiting = queue.declaration_result.message_count or 0
                    drained = 0
                    if waiting:
                        await channel.set_qos(prefetch_count=min(waiting, 256), timeout=timeout)
                        async with queue.iterator(timeout=timeout) as messages:
                            while drained < waiting:
                                async with asyncio.timeout(timeout):
                                    incoming = await messages.__anext__()
                                await self._abandon(incoming, agent_id)
                                drained += 1
                    await queue.delete(if_unused=False, if_empty=False, timeout=timeout)
            except ChannelNotFoundEntity:
                pass  # no such queue (retired already, or never declared): nothing waits
            else:
                _log.info("amqp_agent_queue_removed", agent_id=agent_id, dead_lettered=drained)
        self.declared_queues.discard(name)
        return True

    async def _abandon(self, incoming: AbstractIncomingMessage, agent_id: str) -> None:
        """A message its agent will never take: dead-lettered through the node (its task is
        recorded as ended), or at once when it cannot even be decoded."""
        message = await self._decode(incoming, f"agent:{agent_id}")
        if message is None:
            return
        attempt = _attempt((incoming.headers or {}).get(ATTEMPT_HEADER))
        delivery = AmqpDelivery(message, attempt, incoming, self)
        await self.node.dead_letter(delivery, "agent_stopped", agent_id=agent_id)

    async def subscribe_topic(self, pattern: str) -> None:
        count = self._topics.get(pattern, 0)
        self._topics[pattern] = count + 1
        if count == 0 and self._topic_queue is not None:
            await self._topic_queue.bind(self.name("agents.topic"), routing_key=pattern)

    async def unsubscribe_topic(self, pattern: str) -> None:
        count = self._topics.get(pattern, 0) - 1
        if count > 0:
            self._topics[pattern] = count
            return
        self._topics.pop(pattern, None)
        if self._topic_queue is not None and self._connection is not None:
            await self._topic_queue.unbind(self.name("agents.topic"), routing_key=pattern)


def _attempt(value: object) -> int:
    return value if isinstance(value, int) and value >= 1 else 1


def _error_of(letter: DeadLetter) -> str | None:
    return f"{letter.error_type}: {letter.error_message}" if letter.error_type else None


def _routing_key_of(target: str | None) -> str:
    """The routing key a message to `target` travels under (empty when it has none)."""
    if target is None:
        return ""
    kind, _, value = target.partition(":")
    return value if kind == "topic" else f"{kind}.{value}"


def _address_of(routing_key: str) -> str:
    kind, _, value = routing_key.partition(".")
    return f"{kind}:{value}" if value else routing_key
