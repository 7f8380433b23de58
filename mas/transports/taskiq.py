"""TaskIQ bridge: any TaskIQ producer hands work to mas agents with `run_agent_message`.

    from mas.transports.taskiq import run_agent_message
    await run_agent_message.kiq(message.to_json().decode())

The task travels on TaskIQ's own queue (`<prefix>mas.taskiq`, JSON, never pickle). A TaskIQ
worker (`taskiq worker mas.transports.taskiq:broker`, same `MAS_*` settings) decodes the
message and sends it on to its agent or type queue with a confirmed publish; TaskIQ
acknowledges the task only after that (its default: when the result is saved), so a worker
that dies mid-way leaves the task to another. A message that is not valid, or addressed to
nobody, goes to `agents.dead_letter` with the reason instead of being dropped.

Why a bridge and not the worker's own consumer (DESIGN §9): taskiq-aio-pika declares its queues
once at start-up, hands the receiver only the body, and acknowledges failed tasks, so agent
queues, attempt headers and retries need aio-pika directly (`mas.transports.amqp`).
"""

from __future__ import annotations

from typing import Any

from aio_pika import ExchangeType
from taskiq import AsyncTaskiqDecoratedTask, Context, TaskiqDepends, TaskiqEvents, TaskiqState
from taskiq.serializers import JSONSerializer
from taskiq_aio_pika import AioPikaBroker, Exchange, Queue, QueueType

from mas.config import Settings
from mas.errors import InvalidAddress, InvalidMessage, MessageTooLarge, UnknownAgent
from mas.messages import Message
from mas.runtime import Runtime
from mas.transports.amqp import AmqpTransport

__all__ = ["TASK_NAME", "broker", "create_broker", "run_agent_message"]

TASK_NAME = "mas.run_agent_message"


def create_broker(settings: Settings | None = None) -> AioPikaBroker:
    """A TaskIQ broker on MAS_AMQP_URL with the `run_agent_message` task registered."""
    s = settings if settings is not None else Settings(transport="rabbitmq")
    prefix = s.amqp.prefix
    made = AioPikaBroker(
        s.amqp_url.get_secret_value(),
        qos=s.amqp.prefetch,
        exchange=Exchange(name=f"{prefix}mas.taskiq", type=ExchangeType.DIRECT),
        task_queues=[Queue(name=f"{prefix}mas.taskiq", type=QueueType.QUORUM)],
        dead_letter_queue=Queue(name=f"{prefix}mas.taskiq.dead_letter"),
    ).with_serializer(JSONSerializer())
    _register(made, s.model_copy(update={"transport": "rabbitmq"}))
    return made


def _register(target: AioPikaBroker, settings: Settings) -> AsyncTaskiqDecoratedTask[Any, Any]:
    @target.on_event(TaskiqEvents.WORKER_STARTUP)
    async def start_runtime(state: TaskiqState) -> None:
        runtime = Runtime(settings)
        await runtime.start()
        state.mas_runtime = runtime

    @target.on_event(TaskiqEvents.WORKER_SHUTDOWN)
    async def stop_runtime(state: TaskiqState) -> None:
        runtime: Runtime | None = getattr(state, "mas_runtime", None)
        if runtime is not None:
            await runtime.shutdown()

    @target.task(task_name=TASK_NAME)
    async def run(
        message_json: str,
        context: Context = TaskiqDepends(),  # noqa: B008 - how taskiq injects the context
    ) -> dict[str, Any]:
        """Send a mas message (its JSON) on to `message.target`; returns where it went."""
        runtime: Runtime = context.state.mas_runtime
        try:
            message = Message.from_json(message_json, max_bytes=settings.message_max_bytes)
            if message.target is None:
                raise InvalidMessage("the message has no target: set 'agent:<id>' or 'type:<t>'")
            await runtime.tell(message.target, message)
        except (InvalidMessage, MessageTooLarge, InvalidAddress, UnknownAgent) as exc:
            reason = "unknown_address" if isinstance(exc, UnknownAgent) else "invalid_message"
            transport = runtime.transport
            assert isinstance(transport, AmqpTransport)
            await transport.publish_dead_letter(
                message_json.encode(),
                f"taskiq.{TASK_NAME}",
                reason=reason,
                error=f"{type(exc).__name__}: {exc}",
            )
            return {"status": "dead_lettered", "reason": reason, "error": str(exc)}
        return {"status": "sent", "message_id": message.id, "target": message.target}

    return run


broker = create_broker()
run_agent_message: AsyncTaskiqDecoratedTask[Any, Any] = broker.find_task(TASK_NAME)  # type: ignore[assignment]
