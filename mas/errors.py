"""One exception hierarchy for everything mas raises on purpose, in three layers.

Every error a user can provoke is a `MasError` subclass whose message says what to change.
Under the root, each error sits in the layer that says what the caller does about it:

- `UsageError`: the caller's mistake (a bad address, message, setting or id, a handler that
  returns what it may not, a runtime used outside `async with`). Retrying the same call fails
  the same way: fix the code or the configuration.
- `DeliveryError`: one message could not be delivered or answered (nobody serves the address,
  the mailbox or queue is full, the agent stopped, failed or did not answer in time). The
  runtime and its services work; handle it per message: retry later, send elsewhere, report.
- `ServiceUnavailable`: a service mas depends on (the database, the broker, Redis) does not
  answer now, or is not ready for this mas. Nothing is wrong with the call: retry it later,
  with backoff; an HTTP gateway answers 503 with Retry-After.

`SupervisorEscalation` belongs to none of them: it is not about one call but the end of the
runtime (its root supervisor gave up), so a handler for a layer must not swallow it.

Each boundary (the Store, the AMQP transport, the Redis helpers) turns its library's errors
into these once, with `raise ... from exc`, so callers never catch a driver's exceptions.
Where an error also has a natural builtin meaning (a timeout, a bad value, a wrong type) the
class inherits that builtin too, so `except TimeoutError` keeps working.
"""

from __future__ import annotations


class MasError(Exception):
    """Root of every error mas raises deliberately."""


class UsageError(MasError):
    """The caller's mistake: the same call fails again until the code or settings change.

    Over HTTP a usage error caused by the request is a 4xx; one in the server's own
    configuration or agent code (`ConfigError`, `HandlerReturnError`) is the server's fault.
    """


class DeliveryError(MasError):
    """A message was not delivered or answered; the runtime and its services still work.

    What to do is a per-message decision: retry later (a full mailbox empties), send it
    elsewhere, or report the failure (`HandlerError` carries the agent's last error).
    """


class ServiceUnavailable(MasError):
    """A service mas depends on (database, broker, Redis, a model server) does not answer
    now: retry later.

    Catch this one class to ride out an outage of any of them; the original driver error is
    chained as `__cause__`. `retry_after` is how long the service asked to be left alone
    (seconds; None: it did not say). A handler that raises it is retried no sooner than that,
    and an outage is not the agent's fault: it keeps its state (no restart, nothing towards
    its supervisor's restart intensity).
    """

    MAX_RETRY_AFTER = 3600.0
    """The longest wait a service may ask for (seconds): a retry is never put off further."""

    def __init__(self, *args: object, retry_after: float | None = None) -> None:
        super().__init__(*args)
        if retry_after is not None and not retry_after >= 0:  # negative, or NaN
            retry_after = None
        self.retry_after = None if retry_after is None else min(retry_after, self.MAX_RETRY_AFTER)


class ConfigError(UsageError, ValueError):
    """The settings or arguments given to the runtime cannot work together.

    Usage: only a change of the settings or arguments makes them work.
    """


class InvalidAddress(UsageError, ValueError):
    """An address string is not `agent:<id>`, `type:<type>` or `topic:<key>`.

    Usage: the string is malformed, whoever would serve it; compare `UnknownAgent`.
    """


class InvalidMessage(UsageError, ValueError):
    """A message (often decoded from the wire) is missing fields or has the wrong types.

    Usage: the sender built it wrong; sending it again is refused again.
    """


class MessageTooLarge(UsageError, ValueError):
    """A message serializes to more bytes than `MAS_MESSAGE_MAX_BYTES` allows.

    Usage: refused before any delivery is tried, and refused again at the same size.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"message is {size} bytes, over the {limit}-byte cap: send a reference to the data "
            "instead of the data, or raise MAS_MESSAGE_MAX_BYTES"
        )
        self.size = size
        self.limit = limit


class UnknownAgent(DeliveryError, LookupError):
    """No live agent (or subscriber) answers to an address.

    Delivery: the address is well formed, nobody serves it now; an agent spawned (or a
    worker started) later does.
    """

    def __init__(self, address: str) -> None:
        super().__init__(
            f"no agent answers to {address!r}: spawn it first, or check the id/type spelling"
        )
        self.address = address


class UnknownCapability(UnknownAgent):
    """No live agent type offers a capability (`capability:<name>`).

    Delivery, like `UnknownAgent`: an agent that offers it, started later, answers.
    """

    def __init__(self, capability: str) -> None:
        MasError.__init__(self, f"no running agent offers capability {capability!r}")
        self.address = f"capability:{capability}"
        self.capability = capability


class UnknownTask(UsageError, LookupError):
    """No task with this id that the caller may see (another caller's task is as unknown as
    none).

    Usage: the id is wrong, or not the caller's; asking again does not change that.
    """

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}")
        self.task_id = task_id


class TaskIdTaken(UsageError):
    """Another caller's task has the id a submission names; nothing of it is shown.

    Usage: the client chose the id (its Idempotency-Key) and must choose another.
    """

    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"another caller's task has the id {task_id!r}: choose another Idempotency-Key "
            "(or body id)"
        )
        self.task_id = task_id


class IdempotencyKeyReused(UsageError, ValueError):
    """A submission repeats a task's id with a different request.

    Usage: a retry must repeat the request; never answered with the old task silently.
    """

    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"the id {task_id!r} was used for a different request (message type, target, "
            "payload or budget differ): a retry must repeat the request, new work needs a new key"
        )
        self.task_id = task_id


class TaskFinished(UsageError):
    """A task that has already ended cannot be cancelled, signalled (or changed).

    Usage: the request no longer applies to the task's state.
    """

    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(f"task {task_id!r} already {status}")
        self.task_id = task_id
        self.status = status


class UnknownDeadLetter(UsageError, LookupError):
    """No dead letter with this id.

    Usage: the id is wrong (or the letter was pruned); asking again does not change that.
    """

    def __init__(self, letter_id: str) -> None:
        super().__init__(f"no dead letter with id {letter_id!r}")
        self.letter_id = letter_id


class DeadLetterSettled(UsageError):
    """A dead letter already replayed cannot be discarded, nor a discarded one replayed.

    Usage: the request no longer applies to the letter's state (replaying a replayed letter
    again is not this error: it answers with the first replay).
    """

    def __init__(self, letter_id: str, status: str) -> None:
        super().__init__(f"dead letter {letter_id!r} was already {status}")
        self.letter_id = letter_id
        self.status = status


class TooManyStreams(UsageError):
    """A caller asked for another event stream while holding its maximum open.

    Usage: each stream holds a connection and the gateway's work; close one (or wait for
    one to end) and ask again (`MAS_API__MAX_STREAMS_PER_CALLER`).
    """

    def __init__(self, caller: str, limit: int) -> None:
        super().__init__(
            f"this caller already holds {limit} open event streams: close one (or wait for "
            "one to end) before opening another"
        )
        self.caller = caller
        self.limit = limit


class Rejected(UsageError):
    """A message refused as its sender's mistake: what a handler raises (this or a subclass)
    for input it will never accept.

    The runtime dead-letters the message at once (reason `rejected`: every attempt would fail
    alike, so there is no retry), and the agent keeps its state and goes on (no restart,
    nothing towards its supervisor's restart intensity). An asker gets it back, naming the
    agent; over HTTP it is a 422.
    """

    def __init__(self, reason: str, *, agent_id: str | None = None) -> None:
        where = f"agent {agent_id!r} rejected the message: " if agent_id else ""
        super().__init__(f"{where}{reason}")
        self.reason = reason
        self.agent_id = agent_id


class BudgetExceeded(Rejected):
    """A task's model calls (its own and its children's) went past the budget it was given.

    The task has ended `budget_exceeded` with its children; the message whose handler made
    the call is dead-lettered at once (reason `rejected`: the budget does not grow back).
    """

    def __init__(self, task_id: str, spent: str, budget: str) -> None:
        super().__init__(f"task {task_id!r} spent {spent} on model calls: its budget was {budget}")
        self.task_id = task_id


class DuplicateAgent(UsageError):
    """An agent id is already taken in this runtime.

    Usage: the caller chose the id; spawning again under it fails again.
    """

    def __init__(self, agent_id: str) -> None:
        super().__init__(
            f"an agent with id {agent_id!r} already exists: choose another id, "
            "or omit id to get a generated one"
        )
        self.agent_id = agent_id


class MailboxFull(DeliveryError):
    """The target's mailbox is full and its overflow policy is `reject`.

    Delivery: this message was refused; the mailbox empties, so a later retry may land.

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


class QueueFull(DeliveryError):
    """The broker queue serving an address holds more than the gateway accepts behind it.

    Delivery: the broker answers, the address's backlog is too deep; retry later.
    """

    def __init__(self, address: str, depth: int, limit: int) -> None:
        super().__init__(
            f"{depth} messages already wait for {address!r}, over the limit of {limit} "
            "(MAS_API__MAX_QUEUE_DEPTH): retry later"
        )
        self.address = address
        self.depth = depth
        self.limit = limit


class AskTimeout(DeliveryError, TimeoutError):
    """No reply arrived within the `ask` timeout.

    Delivery: this message got no answer in time (the agent may still handle it); the
    services answered, or the transport would have raised `TransportError`.
    """

    def __init__(self, address: str, timeout: float) -> None:
        super().__init__(f"no reply from {address!r} within {timeout}s")
        self.address = address
        self.timeout = timeout


class SignalTimeout(DeliveryError, TimeoutError):
    """No signal of that name reached the task within the `ctx.signal` timeout.

    Delivery: the answer a workflow waits for (a person's approval, another system's
    callback) did not come in time; mas and its services work.
    """

    def __init__(self, task_id: str, name: str, timeout: float) -> None:
        super().__init__(f"no signal {name!r} for task {task_id!r} within {timeout}s")
        self.task_id = task_id
        self.name = name
        self.timeout = timeout


class AgentStopped(DeliveryError):
    """The agent stopped before it could handle (or answer) the message.

    Delivery: this agent takes no more messages; another one (of its type) may.
    """

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id!r} is stopped and takes no messages")
        self.agent_id = agent_id


class HandlerError(DeliveryError):
    """A handler failed on every attempt; the message went to dead letters.

    Delivery: the message reached the agent and was not answered; the agent's own error,
    not mas or a service, is why.

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


class HandlerReturnError(UsageError, TypeError):
    """`handle_message` returned something other than None, Message, TaskResult or a list.

    Usage: the agent's code breaks the handler's contract, on every message alike.
    """


class StepResultNotJSON(UsageError, TypeError):
    """A durable step returned (or an ask was answered with) something JSON cannot hold.

    Usage: a step's result is recorded so that a re-run can return it without running the
    step again; what cannot be recorded cannot be replayed.
    """

    def __init__(self, name: str, error: Exception) -> None:
        super().__init__(f"step {name!r} returned a value that is not JSON: {error}")
        self.name = name


class WorkflowDiverged(UsageError):
    """A re-run of a handler took another path than the run it replays.

    Usage: the handler's durable steps must come in the same order with the same names on
    every run of one message (no randomness, clock or I/O deciding which step comes next
    outside a step). Mixing one run's recorded results into another path would be silently
    wrong, so the message is dead-lettered at once (a retry would diverge again).
    """

    def __init__(self, message_id: str, seq: int, recorded: str, requested: str) -> None:
        super().__init__(
            f"step {seq} of message {message_id!r} was recorded as {recorded!r}, but this run "
            f"asks for {requested!r}: the handler's steps changed between runs"
        )
        self.message_id = message_id
        self.seq = seq
        self.recorded = recorded
        self.requested = requested


class AgentStartError(DeliveryError):
    """An agent's `start()` raised, so it could not be spawned or restarted.

    Delivery, like `HandlerError`: the agent's own code failed (often on a resource it
    opens), so it takes no messages; mas and its services work, and a later spawn may succeed.
    """


class SupervisorEscalation(MasError):
    """A supervisor exceeded its restart intensity and gave up on its children.

    Raised to the code that embeds the runtime when it reaches the root supervisor. In no
    layer: it ends the runtime, not one call, so `except DeliveryError` must not swallow it.
    """

    def __init__(self, supervisor_id: str, max_restarts: int, period: float) -> None:
        super().__init__(
            f"supervisor {supervisor_id!r} exceeded {max_restarts} restarts in {period}s "
            "and stopped its children"
        )
        self.supervisor_id = supervisor_id
        self.max_restarts = max_restarts
        self.period = period


class RuntimeNotRunning(UsageError, RuntimeError):
    """The runtime was used before `async with Runtime()` started it, or after it stopped.

    Usage: this runtime does not start again by itself. (A gateway that is stopping answers
    503: another instance, or this one restarted, will take the request.)
    """


class TransportError(ServiceUnavailable):
    """The transport could not carry a message (broker unreachable, publish refused).

    Unavailable: the broker did not connect, confirm or answer; a retry after it recovers
    goes through. (A broker that answers "nobody serves this" raises `UnknownAgent`.)
    """


class StoreUnavailable(ServiceUnavailable):
    """The database cannot be reached (its URL is shown with the password masked).

    Unavailable: it refused, broke the connection or failed the statement; retry later.
    """


class StoreTimeout(StoreUnavailable, TimeoutError):
    """The database did not answer within `MAS_DATABASE_TIMEOUT` (a wait that ran out)."""


class SchemaOutdated(ServiceUnavailable):
    """The database schema is behind (or ahead of) the migrations this mas expects.

    Unavailable, not a usage error: the database is not ready for this mas yet. During a
    deploy the migration job (`mas db upgrade`) fixes it without any change to the caller,
    so a retry later succeeds; nothing the caller sent was wrong.
    """


class RedisUnavailable(ServiceUnavailable, ConnectionError):
    """Redis could not answer, so the cluster helper cannot tell what it was asked.

    Raised by operations whose caller must decide what "don't know" means (a node's
    heartbeat, listing nodes). The hot-path dedupe claim never raises it: it answers UNKNOWN
    instead.
    """

    def __init__(self, operation: str, error: BaseException) -> None:
        super().__init__(
            f"Redis did not answer {operation} ({type(error).__name__}: {error}); "
            "check that Redis is running and MAS_REDIS_URL points at it"
        )
        self.operation = operation
