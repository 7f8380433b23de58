"""Transports: the seam between the runtime and the wire (see `base.Transport`)."""

from mas.config import Settings
from mas.errors import ConfigError
from mas.transports.base import DeadLetter, Delivery, Transport, TransportNode

__all__ = ["DeadLetter", "Delivery", "Transport", "TransportNode", "create_transport"]


def create_transport(settings: Settings) -> Transport:
    """The transport `MAS_TRANSPORT` names; broker clients are imported only when chosen."""
    if settings.transport == "memory":
        from mas.transports.memory import MemoryBroker, MemoryTransport

        broker = MemoryBroker(
            serialize=settings.serialize_messages, max_bytes=settings.message_max_bytes
        )
        return MemoryTransport(broker)
    if settings.transport == "rabbitmq":
        try:
            from mas.transports.amqp import AmqpTransport
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise ConfigError(
                "MAS_TRANSPORT=rabbitmq needs the rabbitmq extra: "
                "pip install 'mas-runtime[rabbitmq]'"
            ) from exc
        return AmqpTransport(
            settings.amqp_url.get_secret_value(),
            settings.amqp,
            max_bytes=settings.message_max_bytes,
            redis_url=redis.get_secret_value() if (redis := settings.redis_url) else None,
            dedupe_ttl=settings.dedupe_ttl,
        )
    raise ConfigError(
        f"MAS_TRANSPORT={settings.transport!r} is not available in this version of mas: "
        "use MAS_TRANSPORT=memory"
    )
