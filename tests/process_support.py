"""Real `mas` processes for tests: start one, read its output as it comes, stop it.

Synchronisation is on output lines and process exits, never on sleeps.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

__all__ = ["MasProcess", "clean_environment"]

ROOT = Path(__file__).resolve().parent.parent


def clean_environment(**settings: str) -> dict[str, str]:
    """This environment without the developer's MAS_* variables, plus `settings`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MAS_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT)  # agents for tests live in the tests package
    env.update(settings)
    return env


class MasProcess:
    """`python -m mas.cli ARGS` with its stdout and stderr collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.args = args
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mas.cli", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._open = 2
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(stream,), daemon=True)
            for stream in (self.process.stdout, self.process.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 30.0) -> str:
        """The first line (from now on, or already read) that satisfies `predicate`."""
        for line in self.lines:
            if predicate(line):
                return line
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                pytest.fail(f"mas {' '.join(self.args)}: no expected line in {timeout}s:\n{self}")
            if line is None:
                self._open -= 1
                if self._open == 0:
                    pytest.fail(
                        f"mas {' '.join(self.args)} exited ({self.process.wait()}):\n{self}"
                    )
                continue
            self.lines.append(line)
            if predicate(line):
                return line

    def drain_output(self) -> None:
        """Collect what the (stopped) process wrote."""
        for reader in self._readers:
            reader.join(timeout=10)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines read so far."""
        events = []
        for line in self.lines:
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit code (killed if it does not stop in `timeout`)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.drain_output()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.drain_output()

    def __str__(self) -> str:
        return "\n".join(self.lines[-40:])
