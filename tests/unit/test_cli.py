"""The `mas` command, run as a user runs it: a real subprocess."""

from __future__ import annotations

import subprocess
import sys


def run_mas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mas.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_lists_the_commands() -> None:
    result = run_mas("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_demo_shows_an_ask_a_restart_and_a_dead_letter_and_exits_0() -> None:
    result = run_mas("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "1. ask echo" in out
    assert "supervisor restarted it" in out
    assert "reason=max_attempts attempts=3" in out
    assert "dead_letters=1" in out


def test_unknown_command_fails_with_usage() -> None:
    result = run_mas("nope")
    assert result.returncode != 0
