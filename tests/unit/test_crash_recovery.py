"""`mas up` killed with tasks accepted and not finished: restarted, it finishes them, once.

A task answered 202 is a promise. Its message sat in an agent's mailbox, in memory, when the
process died; the outbox row written with the task's creation is what lets the next process
deliver it again. SQLite in a temporary directory: no external service needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from mas.api.auth import mint_token
from tests.process_support import MasProcess, clean_environment

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="kills with SIGKILL")

SECRET = "k" * 40
SLOW_ECHO = "tests.integration.work_agents:SlowEcho"
STARTUP = 60.0


def _start(tmp_path: Path, effects: Path) -> tuple[MasProcess, str]:
    env = clean_environment(
        MAS_AUTH__JWT_SECRET=SECRET,
        MAS_OUTBOX__LEASE="1",
        MAS_DATABASE_TIMEOUT="2",
        MAS_OUTBOX__SWEEP_INTERVAL="0.2",
        MAS_TEST_EFFECTS=str(effects),
    )
    process = MasProcess(["up", "--port", "0", "--agents", SLOW_ECHO], env, tmp_path)
    line = process.wait_for(lambda line: line.startswith("mas up: "), timeout=STARTUP)
    url = line.split()[2]
    process.wait_for(lambda line: '"event": "runtime_started"' in line, timeout=STARTUP)
    return process, url


def test_tasks_accepted_before_a_kill_are_finished_once_after_the_restart(
    tmp_path: Path,
) -> None:
    effects = tmp_path / "effects"
    token = mint_token(SECRET, "tester", ["tasks:read", "tasks:write"], ttl=600)
    headers = {"Authorization": f"Bearer {token}"}
    first, url = _start(tmp_path, effects)
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            ids = []
            for n in range(3):
                created = client.post(
                    "/tasks/", json={"type": "slow_echo", "payload": {"n": n, "delay": 2}}
                )
                assert created.status_code == 202, created.text
                ids.append(created.json()["id"])
    finally:
        first.kill()  # SIGKILL: the first task is in its handler, the others queued behind it
    assert not effects.exists() or effects.read_text().split() == []

    second, url = _start(tmp_path, effects)
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            ended = [client.get(f"/tasks/{task_id}", params={"wait": 40}).json() for task_id in ids]
    finally:
        assert second.terminate() == 0
    assert [(task["id"], task["status"]) for task in ended] == [
        (task_id, "succeeded") for task_id in ids
    ], second
    assert sorted(effects.read_text().split()) == sorted(ids)  # each handled exactly once
    resent = [e for e in second.logs() if e.get("event") == "outbox_message_resent"]
    assert sorted(e["message_id"] for e in resent) == sorted(ids)
