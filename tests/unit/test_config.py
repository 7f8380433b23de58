"""Settings: defaults for a newcomer, and `MAS_*` environment variables (nested with `__`)."""

from __future__ import annotations

import os

import pytest
from pydantic import SecretStr, ValidationError

from mas.config import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No `MAS_*` variable or `.env` file of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith("MAS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_need_nothing_installed():
    settings = Settings()

    assert settings.transport == "memory"
    assert settings.node_id is None
    assert settings.serialize_messages is False
    assert settings.message_max_bytes == 1_048_576
    assert settings.mailbox.capacity == 1000
    assert settings.mailbox.overflow == "block"
    assert settings.retry.max_attempts == 3
    assert settings.supervisor.max_restarts == 20
    assert settings.supervisor.period == 10.0
    assert settings.redis_url is None


def test_transport_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MAS_TRANSPORT", "rabbitmq")

    assert Settings().transport == "rabbitmq"


def test_nested_settings_use_double_underscore(monkeypatch):
    monkeypatch.setenv("MAS_MAILBOX__CAPACITY", "5")
    monkeypatch.setenv("MAS_MAILBOX__OVERFLOW", "reject")
    monkeypatch.setenv("MAS_RETRY__MAX_ATTEMPTS", "7")
    monkeypatch.setenv("MAS_SUPERVISOR__PERIOD", "2.5")

    settings = Settings()

    assert settings.mailbox.capacity == 5
    assert settings.mailbox.overflow == "reject"
    assert settings.retry.max_attempts == 7
    assert settings.retry.base_delay == 0.1  # untouched siblings keep their defaults
    assert settings.supervisor.period == 2.5


def test_dead_letter_bounds_come_from_the_environment_and_zero_turns_one_off(monkeypatch):
    amqp = pytest.importorskip("mas.transports.amqp")
    defaults = amqp.AmqpTransport("amqp://localhost/", Settings().amqp)
    assert defaults.dead_letter_arguments() == {
        "x-max-length": 100_000,
        "x-max-length-bytes": 256 * 1024 * 1024,
        "x-overflow": "drop-head",
        "x-message-ttl": 7 * 24 * 3600 * 1000,
    }
    monkeypatch.setenv("MAS_AMQP__DEAD_LETTER_MAX_BODY", "4096")
    monkeypatch.setenv("MAS_AMQP__DEAD_LETTER_MAX_LENGTH", "0")
    monkeypatch.setenv("MAS_AMQP__DEAD_LETTER_MAX_BYTES", "1000000")
    monkeypatch.setenv("MAS_AMQP__DEAD_LETTER_TTL", "0")

    settings = Settings().amqp

    assert settings.dead_letter_max_body == 4096
    assert amqp.AmqpTransport("amqp://localhost/", settings).dead_letter_arguments() == {
        "x-max-length-bytes": 1_000_000,
        "x-overflow": "drop-head",
    }


def test_scalar_settings_are_parsed_from_strings(monkeypatch):
    monkeypatch.setenv("MAS_SERIALIZE_MESSAGES", "true")
    monkeypatch.setenv("MAS_NODE_ID", "node-a")
    monkeypatch.setenv("MAS_MESSAGE_MAX_BYTES", "4096")

    settings = Settings()

    assert settings.serialize_messages is True
    assert settings.node_id == "node-a"
    assert settings.message_max_bytes == 4096


def test_env_file_in_the_working_directory_is_read(tmp_path):
    (tmp_path / ".env").write_text("MAS_TRANSPORT=rabbitmq\nMAS_MAILBOX__CAPACITY=9\n")

    settings = Settings()

    assert settings.transport == "rabbitmq"
    assert settings.mailbox.capacity == 9


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAS_TRANSPORT", "kafka"),
        ("MAS_MAILBOX__CAPACITY", "0"),
        ("MAS_MAILBOX__CAPACITY", "many"),
        ("MAS_MAILBOX__OVERFLOW", "explode"),
        ("MAS_RETRY__MAX_ATTEMPTS", "0"),
        ("MAS_RETRY__JITTER", "1.5"),
        ("MAS_SUPERVISOR__PERIOD", "0"),
        ("MAS_SUPERVISOR__MAX_RESTARTS", "-1"),
        ("MAS_MESSAGE_MAX_BYTES", "10"),
        ("MAS_LOG_FORMAT", "xml"),
    ],
)
def test_invalid_values_raise_validation_error(monkeypatch, name, value):
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError):
        Settings()


def test_invalid_keyword_arguments_raise_validation_error():
    with pytest.raises(ValidationError):
        Settings(transport="carrier-pigeon")


def test_connection_urls_are_secrets_hidden_from_repr(monkeypatch):
    monkeypatch.setenv("MAS_AMQP_URL", "amqp://user:s3cret-amqp@broker:5672/")
    monkeypatch.setenv("MAS_DATABASE_URL", "postgresql+asyncpg://u:s3cret-db@db/mas")
    monkeypatch.setenv("MAS_REDIS_URL", "redis://:s3cret-redis@cache:6379/0")

    settings = Settings()

    for secret in (settings.amqp_url, settings.database_url, settings.redis_url):
        assert isinstance(secret, SecretStr)
    assert settings.amqp_url.get_secret_value() == "amqp://user:s3cret-amqp@broker:5672/"
    text = repr(settings) + str(settings)
    assert "s3cret" not in text


def test_default_amqp_password_is_not_shown_either():
    assert "guest:guest" not in repr(Settings())
