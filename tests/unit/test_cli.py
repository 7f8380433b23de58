"""The `mas` command, run as a user runs it: a real subprocess."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def run_mas(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mas.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=cwd,
    )


def test_help_lists_the_commands() -> None:
    result = run_mas("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_demo_shows_an_ask_a_restart_a_dead_letter_and_a_plan_and_exits_0() -> None:
    result = run_mas("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "1. ask echo" in out
    assert "supervisor restarted it" in out
    assert "reason=max_attempts attempts=3" in out
    assert "dead_letters=1" in out
    assert "4. ask planner (brief) -> plan summary:summarize, calc1:calc, calc2:calc" in out
    assert "calc1=86400 calc2=1024" in out


def test_unknown_command_fails_with_usage() -> None:
    result = run_mas("nope")
    assert result.returncode != 0


def _mas_env(**settings: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MAS_")}
    return env | settings


def test_worker_refuses_an_agent_class_it_cannot_import() -> None:
    result = run_mas("worker", "--agents", "no_such_module:Agent", env=_mas_env())
    assert result.returncode == 2
    assert "cannot import 'no_such_module:Agent'" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_says_which_broker_it_cannot_reach() -> None:
    env = _mas_env(
        MAS_TRANSPORT="rabbitmq",
        MAS_AMQP_URL="amqp://guest:secret@127.0.0.1:1/",
        MAS_AMQP__CONNECT_TIMEOUT="2",
    )
    result = run_mas("worker", "--agents", "agents.echo:EchoAgent", "--no-persist", env=env)
    assert result.returncode == 1
    assert "cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/" in result.stderr
    assert "secret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_serving_metrics_still_says_which_broker_it_cannot_reach() -> None:
    env = _mas_env(
        MAS_TRANSPORT="rabbitmq",
        MAS_AMQP_URL="amqp://guest:secret@127.0.0.1:1/",
        MAS_AMQP__CONNECT_TIMEOUT="2",
    )
    args = ("worker", "--agents", "agents.echo:EchoAgent", "--no-persist", "--metrics-port", "0")
    result = run_mas(*args, env=env)
    assert result.returncode == 1
    assert "error: cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_says_its_metrics_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ("worker", "--agents", "agents.echo:EchoAgent", "--no-persist")
        result = run_mas(*args, "--metrics-port", str(port), env=_mas_env())
    assert result.returncode == 2
    assert f"error: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_api_says_which_database_it_cannot_reach_before_it_listens() -> None:
    env = _mas_env(
        MAS_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:1/test",
        MAS_AUTH__JWT_SECRET="s" * 40,
    )
    result = run_mas("api", "--port", "0", env=env)
    assert result.returncode == 1
    assert "cannot reach the database at postgresql+asyncpg://postgres@127.0.0.1:1/test" in (
        result.stderr
    )
    assert "mas api:" not in result.stdout  # it never said it was listening
    assert "Traceback" not in result.stderr


def test_up_says_which_database_it_cannot_reach_before_it_listens() -> None:
    env = _mas_env(MAS_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:1/test")
    result = run_mas("up", "--port", "0", env=env)
    assert result.returncode == 1
    assert "cannot reach the database at postgresql+asyncpg://postgres@127.0.0.1:1/test" in (
        result.stderr
    )
    assert "mas up:" not in result.stdout
    assert "Traceback" not in result.stderr


# A database nobody serves: a command that got past its secret check would fail on it at
# once (exit 1) instead of serving, so these tests end either way.
UNREACHABLE_DB = "postgresql+asyncpg://postgres@127.0.0.1:1/test"


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], *needles: str, code: int = 2
) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_api_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    # Each replica would generate its own secret, and no token would work on more than one.
    env = _mas_env(MAS_DATABASE_URL=UNREACHABLE_DB)
    result = run_mas("api", "--port", "0", env=env, cwd=tmp_path)  # tmp_path: no .env
    assert_one_line_error(result, "MAS_AUTH__JWT_SECRET is not set")
    assert "mas api:" not in result.stdout


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("changeme", "placeholder"),
        ("CHANGE-ME", "placeholder"),
        ("change-me-to-a-random-secret-of-at-least-32-characters", "placeholder"),
        ("only-27-bytes-of-randomness", "at least 32"),
    ],
)
@pytest.mark.parametrize("command", ["api", "up"])
def test_a_weak_configured_secret_is_refused(
    tmp_path: Path, command: str, secret: str, says: str
) -> None:
    env = _mas_env(MAS_DATABASE_URL=UNREACHABLE_DB, MAS_AUTH__JWT_SECRET=secret)
    result = run_mas(command, "--port", "0", env=env, cwd=tmp_path)
    assert_one_line_error(result, "MAS_AUTH__JWT_SECRET", says)
    assert secret not in result.stderr
    assert f"mas {command}:" not in result.stdout


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+asyncpg://postgres@127.0.0.1:notaport/test", "port is not a number"),
        ("postgresql+asyncpg://postgres@127.0.0.1:99999/test", "port 99999 is not in 1-65535"),
    ],
)
def test_db_current_with_a_bad_url_says_so_in_one_line(tmp_path: Path, url: str, says: str) -> None:
    result = run_mas("db", "current", "--url", url, env=_mas_env(), cwd=tmp_path)
    assert_one_line_error(result, "not a database URL", says, code=1)


def test_api_says_which_broker_it_cannot_reach_before_it_listens(tmp_path: Path) -> None:
    env = _mas_env(
        MAS_TRANSPORT="rabbitmq",
        MAS_AMQP_URL="amqp://guest:hunter2@127.0.0.1:1/",
        MAS_AMQP__CONNECT_TIMEOUT="2",
        MAS_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'mas.db'}",
        MAS_AUTH__JWT_SECRET="s" * 40,
    )
    result = run_mas("api", "--port", "0", env=env, cwd=tmp_path)
    assert_one_line_error(
        result, "cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/", code=1
    )
    assert "hunter2" not in result.stderr
    assert "mas api:" not in result.stdout  # it never said it was listening


def _command_paths() -> list[list[str]]:
    import typer

    from mas.cli import app

    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():  # a group (typer's click)
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda path: " ".join(path) or "mas")
def test_help_shows_readable_metavars(path: list[str]) -> None:
    from typer.testing import CliRunner

    from mas.cli import app

    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    options = result.output.partition("Options:")[2].partition("Commands:")[0]
    # Python types (`<bool>`, `<list[str]>`, `<int range>`) say nothing to a user: options
    # name what they take (`--agents MODULE:CLASS`), flags take nothing.
    assert re.search(r"<[A-Za-z_][\w\[\], ]*>", options) is None, options
    for python_type in ("<bool>", "<list[", "<int", "<float>"):
        assert python_type not in result.output, result.output


# What only some commands need; `mas --help` paying for them made every command slow to start
# (and broke it when an extra was not installed).
HEAVY = frozenset(
    {
        "sqlalchemy",
        "alembic",
        "asyncpg",
        "aiosqlite",
        "fastapi",
        "starlette",
        "uvicorn",
        "aio_pika",
        "aiormq",
        "taskiq",
        "redis",
        "opentelemetry",
        "prometheus_client",
    }
)


def imported_packages(*args: str) -> set[str]:
    """The top-level packages `mas ARGS` imports, read from `python -X importtime`."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mas.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_mas_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return {
        line.rpartition("|")[2].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["version"],
        ["up", "--help"],
        ["db", "--help"],
        ["send", "--help"],
        ["token", "create", "--sub", "ci", "--scope", "tasks:read", "--secret", "k" * 40],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_a_command_imports_no_heavy_dependency_it_does_not_use(args: list[str]) -> None:
    imported = imported_packages(*args)
    assert "mas" in imported  # the parse found the imports
    assert imported & HEAVY == set()
    if args[0] != "token":
        assert "jwt" not in imported
