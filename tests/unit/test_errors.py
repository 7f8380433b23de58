"""The error hierarchy: one root, builtin bases where they fit, messages that say what to do."""

from __future__ import annotations

import inspect

import pytest

import mas.errors
from mas.errors import (
    AgentStartError,
    AgentStopped,
    AskTimeout,
    ConfigError,
    DuplicateAgent,
    HandlerError,
    HandlerReturnError,
    InvalidAddress,
    InvalidMessage,
    MailboxFull,
    MasError,
    MessageTooLarge,
    RuntimeNotRunning,
    SupervisorEscalation,
    TransportError,
    UnknownAgent,
)

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
        "ConfigError",
        "DuplicateAgent",
        "HandlerError",
        "HandlerReturnError",
        "InvalidAddress",
        "InvalidMessage",
        "MailboxFull",
        "MasError",
        "MessageTooLarge",
        "QueueFull",
        "RedisUnavailable",
        "RuntimeNotRunning",
        "SchemaOutdated",
        "StoreUnavailable",
        "StoreTimeout",
        "SupervisorEscalation",
        "TransportError",
        "UnknownAgent",
    }


@pytest.mark.parametrize("error_class", ALL_ERRORS, ids=lambda cls: cls.__name__)
def test_every_error_is_a_mas_error(error_class):
    assert issubclass(error_class, MasError)
    assert issubclass(error_class, Exception)


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
