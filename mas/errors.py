"""One exception hierarchy for everything mas raises on purpose.

Every error a user can provoke is a `MasError` subclass whose message says what to change.
Where an error also has a natural builtin meaning (a timeout, a bad value, a wrong type) the
class inherits that builtin too, so `except TimeoutError` keeps working.
"""

from __future__ import annotations


class MasError(Exception):
    """Root of every error mas raises deliberately."""


class ConfigError(MasError, ValueError):
    """The settings or arguments given to the runtime cannot work together."""


class InvalidAddress(MasError, ValueError):
    """An address string is not `agent:<id>`, `type:<type>` or `topic:<key>`."""


class InvalidMessage(MasError, ValueError):
    """A message (often decoded from the wire) is missing fields or has the wrong types."""


class MessageTooLarge(MasError, ValueError):
    """A message serializes to more bytes than `MAS_MESSAGE_MAX_BYTES` allows."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"message is {size} bytes, over the {limit}-byte cap: send a reference to the data "
            "instead of the data, or raise MAS_MESSAGE_MAX_BYTES"
        )
        self.size = size
        self.limit = limit


class UnknownAgent(MasError, LookupError):
    """No live agent (or subscriber) answers to an address."""

    def __init__(self, address: str) -> None:
        super().__init__(
            f"no agent answers to {address!r}: spawn it first, or check the id/type spelling"
        )
        self.address = address


class DuplicateAgent(MasError):
    """An agent id is already taken in this runtime."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(
            f"an agent with id {agent_id!r} already exists: choose another id, "
            "or omit id to get a generated one"
        )
        self.agent_id = agent_id


class MailboxFull(MasError):
    """The target's mailbox is full and its overflow policy is `reject`.

    Also raised by `ask` when the asked message was dropped because the mailbox overflowed
    (a `drop_oldest` mailbox, or a full subscriber of a topic): the answer that says so
    comes from the agent's node, which may be another process, so `capacity` is None then.
    """

    def __init__(self, agent_id: str, capacity: int | None) -> None:
        if capacity is None:
            what = f"mailbox of agent {agent_id!r} overflowed and dropped the message unhandled"
        else:
            what = f"mailbox of agent {agent_id!r} is full ({capacity} messages)"
        super().__init__(
            f"{what}: retry later, raise its mailbox_capacity or choose overflow='block'"
        )
        self.agent_id = agent_id
        self.capacity = capacity


class QueueFull(MasError):
    """The broker queue serving an address holds more than the gateway accepts behind it."""

    def __init__(self, address: str, depth: int, limit: int) -> None:
        super().__init__(
            f"{depth} messages already wait for {address!r}, over the limit of {limit} "
            "(MAS_API__MAX_QUEUE_DEPTH): retry later"
        )
        self.address = address
        self.depth = depth
        self.limit = limit


class AskTimeout(MasError, TimeoutError):
    """No reply arrived within the `ask` timeout."""

    def __init__(self, address: str, timeout: float) -> None:
        super().__init__(f"no reply from {address!r} within {timeout}s")
        self.address = address
        self.timeout = timeout


class AgentStopped(MasError):
    """The agent stopped before it could handle (or answer) the message."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id!r} is stopped and takes no messages")
        self.agent_id = agent_id


class HandlerError(MasError):
    """A handler failed on every attempt; the message went to dead letters.

    Raised by `ask`. `error_type` and `error_message` describe the last failure; the original
    exception is chained as `__cause__` when it happened in this process.
    """

    def __init__(self, agent_id: str, error_type: str, error_message: str, attempts: int) -> None:
        super().__init__(
            f"agent {agent_id!r} failed after {attempts} attempt(s): {error_type}: {error_message}"
        )
        self.agent_id = agent_id
        self.error_type = error_type
        self.error_message = error_message
        self.attempts = attempts


class HandlerReturnError(MasError, TypeError):
    """`handle_message` returned something other than None, Message, TaskResult or a list."""


class AgentStartError(MasError):
    """An agent's `start()` raised, so it could not be spawned or restarted."""


class SupervisorEscalation(MasError):
    """A supervisor exceeded its restart intensity and gave up on its children.

    Raised to the code that embeds the runtime when it reaches the root supervisor.
    """

    def __init__(self, supervisor_id: str, max_restarts: int, period: float) -> None:
        super().__init__(
            f"supervisor {supervisor_id!r} exceeded {max_restarts} restarts in {period}s "
            "and stopped its children"
        )
        self.supervisor_id = supervisor_id
        self.max_restarts = max_restarts
        self.period = period


class RuntimeNotRunning(MasError, RuntimeError):
    """The runtime was used before `async with Runtime()` started it, or after it stopped."""


class TransportError(MasError):
    """The transport could not carry a message (broker unreachable, publish refused)."""


class StoreUnavailable(MasError):
    """The database cannot be reached (its URL is shown with the password masked)."""


class StoreTimeout(StoreUnavailable, TimeoutError):
    """The database did not answer within `MAS_DATABASE_TIMEOUT` (a wait that ran out)."""


class SchemaOutdated(MasError):
    """The database schema is behind (or ahead of) the migrations this mas expects."""


class RedisUnavailable(MasError, ConnectionError):
    """Redis could not answer, so the cluster helper cannot tell what it was asked.

    Raised by operations whose caller must decide what "don't know" means (acquiring a lease,
    listing nodes). The hot-path dedupe claim never raises it: it answers UNKNOWN instead.
    """

    def __init__(self, operation: str, error: BaseException) -> None:
        super().__init__(
            f"Redis did not answer {operation} ({type(error).__name__}: {error}); "
            "check that Redis is running and MAS_REDIS_URL points at it"
        )
        self.operation = operation
