"""The error hierarchy: one root, three layers, builtin bases where they fit, messages that
say what to do."""

from __future__ import annotations

import inspect

import pytest

import mas.errors
from mas.cluster import NodeHeartbeats
from mas.cluster import connect as connect_redis
from mas.errors import (
    AgentStartError,
    AgentStopped,
    AskTimeout,
    BudgetExceeded,
    ConfigError,
    DeadLetterSettled,
    DeliveryError,
    DuplicateAgent,
    HandlerError,
    HandlerReturnError,
    IdempotencyKeyReused,
    InvalidAddress,
    InvalidMessage,
    MailboxFull,
    MasError,
    MessageTooLarge,
    QueueFull,
    RedisUnavailable,
    Rejected,
    RuntimeNotRunning,
    SchemaOutdated,
    ServiceUnavailable,
    SignalTimeout,
    StepResultNotJSON,
    StoreTimeout,
    StoreUnavailable,
    SupervisorEscalation,
    TaskFinished,
    TaskIdTaken,
    TooManyStreams,
    TransportError,
    UnknownAgent,
    UnknownCapability,
    UnknownDeadLetter,
    UnknownTask,
    UsageError,
    WorkflowDiverged,
)
from mas.persistence import Store
from mas.transports.amqp import probe

ALL_ERRORS = [
    obj
    for _, obj in inspect.getmembers(mas.errors, inspect.isclass)
    if issubclass(obj, BaseException) and obj.__module__ == "mas.errors"
]


def test_the_error_module_defines_the_expected_classes():
    assert {cls.__name__ for cls in ALL_ERRORS} == {
        "AgentStartError",
        "AgentStopped",
        "AskTimeout",
        "BudgetExceeded",
        "ConfigError",
        "DeadLetterSettled",
        "DeliveryError",
        "DuplicateAgent",
        "HandlerError",
        "HandlerReturnError",
        "IdempotencyKeyReused",
        "InvalidAddress",
        "InvalidMessage",
        "MailboxFull",
        "MasError",
        "Rejected",
        "MessageTooLarge",
        "QueueFull",
        "RedisUnavailable",
        "RuntimeNotRunning",
        "SchemaOutdated",
        "ServiceUnavailable",
        "SignalTimeout",
        "StepResultNotJSON",
        "StoreUnavailable",
        "StoreTimeout",
        "SupervisorEscalation",
        "TaskFinished",
        "TaskIdTaken",
        "TooManyStreams",
        "TransportError",
        "UnknownAgent",
        "UnknownCapability",
        "UnknownDeadLetter",
        "UnknownTask",
        "UsageError",
        "WorkflowDiverged",
    }


@pytest.mark.parametrize("error_class", ALL_ERRORS, ids=lambda cls: cls.__name__)
def test_every_error_is_a_mas_error(error_class):
    assert issubclass(error_class, MasError)
    assert issubclass(error_class, Exception)


LAYERS = (UsageError, DeliveryError, ServiceUnavailable)

# The layer a user would look in: "my mistake", "this message failed", "a service is down".
LAYER_OF: dict[type[MasError], type[MasError] | None] = {
    ConfigError: UsageError,
    InvalidAddress: UsageError,
    InvalidMessage: UsageError,
    MessageTooLarge: UsageError,
    Rejected: UsageError,
    BudgetExceeded: UsageError,
    DuplicateAgent: UsageError,
    HandlerReturnError: UsageError,
    RuntimeNotRunning: UsageError,
    UnknownTask: UsageError,
    TaskIdTaken: UsageError,
    IdempotencyKeyReused: UsageError,
    TaskFinished: UsageError,
    UnknownDeadLetter: UsageError,
    DeadLetterSettled: UsageError,
    TooManyStreams: UsageError,
    StepResultNotJSON: UsageError,
    WorkflowDiverged: UsageError,
    UnknownAgent: DeliveryError,
    UnknownCapability: DeliveryError,
    MailboxFull: DeliveryError,
    QueueFull: DeliveryError,
    AskTimeout: DeliveryError,
    SignalTimeout: DeliveryError,
    AgentStopped: DeliveryError,
    HandlerError: DeliveryError,
    AgentStartError: DeliveryError,
    TransportError: ServiceUnavailable,
    StoreUnavailable: ServiceUnavailable,
    StoreTimeout: ServiceUnavailable,
    SchemaOutdated: ServiceUnavailable,
    RedisUnavailable: ServiceUnavailable,
    # The end of the runtime, not of one call: no layer's handler may swallow it.
    SupervisorEscalation: None,
}


def test_every_error_is_placed_in_a_layer_or_deliberately_in_none():
    assert set(LAYER_OF) | {MasError, *LAYERS} == set(ALL_ERRORS)


@pytest.mark.parametrize(
    ("error_class", "layer"), LAYER_OF.items(), ids=lambda v: getattr(v, "__name__", "none")
)
def test_each_error_is_in_exactly_the_layer_a_user_would_expect(error_class, layer):
    assert [base for base in LAYERS if issubclass(error_class, base)] == ([layer] if layer else [])


@pytest.mark.parametrize("layer", LAYERS, ids=lambda cls: cls.__name__)
def test_the_layers_are_mas_errors_and_disjoint(layer):
    assert layer.__bases__ == (MasError,)
    assert str(layer("explained")) == "explained"


@pytest.mark.anyio
async def test_except_service_unavailable_catches_a_store_a_broker_and_redis_outage():
    """Real drivers against a port nothing listens on: each boundary maps its own errors."""
    caught: list[ServiceUnavailable] = []
    try:
        await Store.open("postgresql+asyncpg://postgres@127.0.0.1:1/test", timeout=5)
    except ServiceUnavailable as exc:
        caught.append(exc)
    try:
        await probe("amqp://guest:guest@127.0.0.1:1/", timeout=5)
    except ServiceUnavailable as exc:
        caught.append(exc)
    redis = connect_redis("redis://127.0.0.1:1/0", retries=0)
    try:
        await NodeHeartbeats(redis).live_nodes()
    except ServiceUnavailable as exc:
        caught.append(exc)
    finally:
        await redis.aclose()

    assert [type(exc) for exc in caught] == [StoreUnavailable, TransportError, RedisUnavailable]
    # The driver's error stays reachable for the operator, never in place of ours.
    assert all(exc.__cause__ is not None for exc in caught)


@pytest.mark.parametrize(
    ("error_class", "builtin"),
    [
        (AskTimeout, TimeoutError),
        (InvalidAddress, ValueError),
        (InvalidMessage, ValueError),
        (MessageTooLarge, ValueError),
        (ConfigError, ValueError),
        (HandlerReturnError, TypeError),
        (UnknownAgent, LookupError),
        (RuntimeNotRunning, RuntimeError),
    ],
)
def test_errors_keep_their_natural_builtin_base(error_class, builtin):
    assert issubclass(error_class, builtin)


def test_ask_timeout_is_caught_by_except_timeout_error():
    with pytest.raises(TimeoutError, match=r"agent:slow.*2\.5s"):
        raise AskTimeout("agent:slow", 2.5)


def test_mailbox_full_says_how_to_make_room():
    error = MailboxFull("worker-1", 10)

    assert (error.agent_id, error.capacity) == ("worker-1", 10)
    text = str(error)
    assert "worker-1" in text
    assert "10" in text
    assert "mailbox_capacity" in text
    assert "overflow" in text


def test_message_too_large_names_sizes_and_the_setting():
    error = MessageTooLarge(2048, 1024)

    assert (error.size, error.limit) == (2048, 1024)
    assert "2048" in str(error)
    assert "1024" in str(error)
    assert "MAS_MESSAGE_MAX_BYTES" in str(error)


def test_unknown_agent_suggests_spawning_or_checking_spelling():
    error = UnknownAgent("agent:ghost")

    assert error.address == "agent:ghost"
    assert "agent:ghost" in str(error)
    assert "spawn" in str(error)


def test_duplicate_agent_suggests_another_id():
    error = DuplicateAgent("alice")

    assert error.agent_id == "alice"
    assert "'alice'" in str(error)
    assert "omit id" in str(error)


def test_agent_stopped_names_the_agent():
    error = AgentStopped("bob")

    assert error.agent_id == "bob"
    assert "'bob'" in str(error)


def test_handler_error_describes_the_last_failure():
    error = HandlerError("worker", "KeyError", "'sku'", attempts=3)

    assert (error.agent_id, error.error_type, error.error_message, error.attempts) == (
        "worker",
        "KeyError",
        "'sku'",
        3,
    )
    assert "3 attempt(s)" in str(error)
    assert "KeyError: 'sku'" in str(error)


def test_supervisor_escalation_names_the_intensity():
    error = SupervisorEscalation("root", 5, 10.0)

    assert (error.supervisor_id, error.max_restarts, error.period) == ("root", 5, 10.0)
    assert "'root'" in str(error)
    assert "5 restarts in 10.0s" in str(error)


@pytest.mark.parametrize(
    "error_class", [AgentStartError, TransportError, HandlerReturnError, ConfigError]
)
def test_message_only_errors_keep_their_message(error_class):
    assert str(error_class("explained")) == "explained"
