"""`mas up` as a user runs it: a real process, real HTTP, `mas send`, then SIGTERM.

No external service is needed (SQLite in a temporary directory), so this runs with the unit
tests. Synchronisation is on output lines and process exits, never on sleeps.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="sends SIGTERM")

STARTUP_DEADLINE = 30.0
SECRET = "s" * 40


@dataclass
class Running:
    process: subprocess.Popen[str]
    cwd: Path
    env: dict[str, str]
    url: str
    token: str
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines written to stderr so far (other lines are skipped)."""
        events = []
        for line in self.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events


def _pump(stream: IO[str], sink: list[str], lines: queue.Queue[str | None] | None) -> None:
    for line in stream:
        sink.append(line.rstrip("\n"))
        if lines is not None:
            lines.put(line.rstrip("\n"))
    if lines is not None:
        lines.put(None)  # end of output: the process is gone


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("MAS_"):
            del env[name]  # no settings from the developer's shell
    env["MAS_AUTH__JWT_SECRET"] = SECRET
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_until_serving(process: subprocess.Popen[str], url: str, stderr: list[str]) -> None:
    """Wait for /livez to answer (the app's start-up, agents included, follows the URL).

    Between attempts this waits on the process itself, so an early exit ends the wait.
    """
    deadline = time.monotonic() + STARTUP_DEADLINE
    with httpx.Client(base_url=url, timeout=STARTUP_DEADLINE) as client:
        while True:
            try:
                assert client.get("/livez").status_code == 200
                return
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    pytest.fail(f"`mas up` did not serve {url} in {STARTUP_DEADLINE}s: {stderr}")
            try:
                returncode = process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"`mas up` exited with {returncode} before serving: {stderr}")


@pytest.fixture
def mas_up(tmp_path: Path) -> Iterator[Running]:
    env = _environment()
    process = subprocess.Popen(
        [sys.executable, "-m", "mas.cli", "up", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    stdout: list[str] = []
    stderr: list[str] = []
    lines: queue.Queue[str | None] = queue.Queue()
    readers = [
        threading.Thread(target=_pump, args=(process.stdout, stdout, lines), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, stderr, None), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        url = token = None
        while url is None or token is None:
            try:
                line = lines.get(timeout=STARTUP_DEADLINE)
            except queue.Empty:
                pytest.fail(f"`mas up` printed no URL and token in {STARTUP_DEADLINE}s: {stderr}")
            if line is None:
                pytest.fail(f"`mas up` exited early ({process.wait()}): {stdout} {stderr}")
            if line.startswith("mas up: "):
                url = line.removeprefix("mas up: ").strip()
            elif line.strip().startswith("dev token:"):
                token = (tmp_path / ".mas" / "dev-token").read_text().strip()
        _wait_until_serving(process, url, stderr)
        yield Running(process, tmp_path, env, url, token, stdout, stderr, readers)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for reader in readers:
            reader.join(timeout=5)


def test_mas_up_serves_tasks_and_stops_cleanly_on_sigterm(mas_up: Running) -> None:
    headers = {"Authorization": f"Bearer {mas_up.token}"}
    with httpx.Client(base_url=mas_up.url, headers=headers, timeout=30) as client:
        created = client.post("/tasks/", json={"type": "echo", "payload": {"text": "over http"}})
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]
        trace_id = created.headers["x-trace-id"]
        done = client.get(f"/tasks/{task_id}", params={"wait": 10})
        assert done.status_code == 200
        assert done.json()["status"] == "succeeded"
        assert done.json()["result"] == {"text": "over http"}
        assert done.json()["trace_id"] == trace_id

    token_file = mas_up.cwd / ".mas" / "dev-token"
    assert token_file.read_text() == f"{mas_up.token}\n"  # `$(cat ...)` gives the token
    assert (mas_up.cwd / ".mas" / "url").read_text().strip() == mas_up.url

    sent = subprocess.run(
        [sys.executable, "-m", "mas.cli", "send", "echo", '{"text": "hi"}'],
        cwd=mas_up.cwd,
        env=mas_up.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    printed = json.loads(sent.stdout)
    assert printed["status"] == "succeeded"
    assert printed["result"] == {"text": "hi"}

    mas_up.process.send_signal(signal.SIGTERM)
    returncode = mas_up.process.wait(timeout=20)
    for reader in mas_up.readers:
        reader.join(timeout=5)
    logs = mas_up.logs()
    events = {event.get("event") for event in logs}
    assert "runtime_stopped" in events, mas_up.stderr[-20:]
    completed = [e for e in logs if e.get("event") == "task_completed"]
    assert any(e.get("task_id") == task_id and e.get("trace_id") == trace_id for e in completed), (
        completed
    )
    assert returncode == 0, f"exit {returncode}: {mas_up.stderr[-5:]}"


def test_mas_up_keeps_its_token_out_of_stdout_in_an_owner_only_file(mas_up: Running) -> None:
    # stdout of a server ends up in captured logs: a full-scope token there is a leak.
    token_file = mas_up.cwd / ".mas" / "dev-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert (mas_up.cwd / ".mas").stat().st_mode & 0o077 == 0
    printed = "\n".join(mas_up.stdout)
    assert mas_up.token not in printed
    assert str(token_file.resolve()) in printed
    assert f"MAS_TOKEN=$(cat {token_file.resolve()})" in printed
    headers = {"Authorization": f"Bearer {mas_up.token}"}
    with httpx.Client(base_url=mas_up.url, headers=headers, timeout=30) as client:
        assert client.get("/tasks/").status_code == 200  # the saved token is the live one


def test_mas_up_exits_0_on_sigterm(mas_up: Running) -> None:
    mas_up.process.send_signal(signal.SIGTERM)
    returncode = mas_up.process.wait(timeout=20)
    for reader in mas_up.readers:
        reader.join(timeout=5)
    assert "runtime_stopped" in {event.get("event") for event in mas_up.logs()}
    assert returncode == 0, f"exit {returncode}: {mas_up.stderr[-5:]}"


def test_the_printed_url_accepts_connections_at_once(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "mas.cli", "up", "--port", "0"],
        cwd=tmp_path,
        env=_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    stdout: list[str] = []
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(process.stdout, stdout, lines), daemon=True)
    reader.start()
    try:
        while True:
            line = lines.get(timeout=STARTUP_DEADLINE)
            assert line is not None, f"`mas up` exited early: {stdout}"
            if line.startswith("mas up: "):
                break
        host, port = line.removeprefix("mas up: ").strip().removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    finally:
        process.kill()
        process.wait()
        reader.join(timeout=5)


def _send(running: Running, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mas.cli", "send", *args],
        cwd=running.cwd,
        env=running.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_mas_send_addresses_one_agent_by_id(mas_up: Running) -> None:
    sent = _send(mas_up, "--agent", "echo", '{"text": "to you"}')  # `mas up` runs agent "echo"
    assert sent.returncode == 0, sent.stderr
    printed = json.loads(sent.stdout)
    assert (printed["status"], printed["target"]) == ("succeeded", "agent:echo")
    assert printed["result"] == {"text": "to you"}
    by_option = _send(mas_up, "--type", "echo", '{"text": "any echo"}')
    assert by_option.returncode == 0, by_option.stderr
    assert json.loads(by_option.stdout)["result"] == {"text": "any echo"}


def test_mas_up_runs_a_planner_whose_plan_asks_its_calc_and_summarize_agents(
    mas_up: Running,
) -> None:
    goal = {
        "kind": "brief",
        "text": "Tides follow the moon. Cats nap. The moon pulls the tides twice a day.",
        "expressions": ["6 * 7"],
    }
    sent = _send(mas_up, "planner", json.dumps(goal))
    assert sent.returncode == 0, sent.stderr
    printed = json.loads(sent.stdout)
    assert printed["status"] == "succeeded", printed
    steps = printed["result"]["steps"]
    assert steps["calc1"] == {"expression": "6 * 7", "value": 42}
    assert steps["summary"]["summary"].startswith("Tides follow the moon.")


def test_mas_send_waits_longer_than_one_request_may(mas_up: Running) -> None:
    """`--wait` goes up to an hour; the gateway takes `?wait=` up to MAS_API__MAX_WAIT (60 s)
    and refuses more (422): the command must not submit a task and then fail reading it."""
    sent = _send(mas_up, "--wait", "120", "echo", '{"text": "patient"}')
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["result"] == {"text": "patient"}


# Each is a usage error (exit 2) said in one line, found before any request is made.
MISTAKES = [
    (("echo", "{}", "--wait", "-1"), "--wait -1.0 is not a number of seconds from 0 to 3600"),
    (("echo", "{}", "--wait", "nan"), "--wait nan is not a number of seconds"),
    (("echo", "{}", "--wait", "7200"), "from 0 to 3600"),
    (("bad type!",), "'bad type!' is not an agent type: use letters, digits"),
    (("--agent", "no spaces allowed"), "is not an agent id: use letters, digits"),
    (("echo", "--agent", "echo"), "name exactly one target"),
    (("--agent", "echo", "--type", "echo"), "name exactly one target"),
    ((), "name exactly one target"),
    (("--agent", "echo", "echo", "{}"), "the only argument is the PAYLOAD"),
    (("echo", "[1]"), "PAYLOAD must be a JSON object"),
]


def test_mas_send_checks_every_argument_before_any_request(mas_up: Running) -> None:
    headers = {"Authorization": f"Bearer {mas_up.token}"}
    for args, says in MISTAKES:
        sent = _send(mas_up, *args)
        assert sent.returncode == 2, (args, sent.stderr)
        assert len(sent.stderr.strip().splitlines()) == 1, sent.stderr
        assert says in sent.stderr, sent.stderr
        assert "pattern" not in sent.stderr and "^" not in sent.stderr  # no raw regex
    with httpx.Client(base_url=mas_up.url, headers=headers, timeout=30) as client:
        assert client.get("/tasks/").json()["items"] == []  # nothing was submitted
