"""The OpenAPI document says what the gateway does: schemathesis, every check, finds nothing.

A live gateway (`mas up` on a free port: SQLite, the in-memory transport, the echo agent)
is tested by the schemathesis CLI with `--checks all` and every phase (examples, coverage,
fuzzing, stateful), a fixed seed, deterministic generation and at most 20 examples per
operation, so a failure reproduces and the run takes seconds. It must report no failure.

Callers are two ordinary users (`alice`, the one the run acts as, and `bob`) whose tokens
grant every scope but `tasks:admin`: the `object_level_authorization` check replays each
one's reads as the other, and `tasks:admin` exists precisely to read everyone's tasks. The
token comes from the Authorization header the document declares (`ignored_auth` and
`missing_required_header` drop it and expect a 401).

Configured, not disabled, where the contract depends on state the schema cannot state:

- `positive_data_acceptance` on `POST /tasks/` also accepts 422: a schema-valid body under
  an `Idempotency-Key` (or body `id`) used before for a different request is refused with
  422, as the Idempotency-Key draft says (stateful runs reuse ids they have seen).
- `not_a_server_error` on `POST /agents/{agent_id}/message` also accepts 504: a `?wait=`
  that runs out without a reply is a documented 504 (the gateway waited on an agent), e.g.
  when the run repeats a message id whose first copy was told, not asked.
- `object_level_authorization` is not run on `/agents/{agent_id}`: agents are shared by
  every caller by design (only tasks belong to their creator).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mas.api.auth import SCOPES, mint_token
from tests.process_support import MasProcess, clean_environment

SECRET = "c" * 40
CALLER_SCOPES = sorted(set(SCOPES) - {"tasks:admin"})

CONFIG = """
[generation]
deterministic = true

[auth.wfc]
path = "auth.json"
user = "alice"
peers = ["alice", "bob"]

[[operations]]
include-path = "/tasks/"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx",
]

[[operations]]
include-path = "/agents/{agent_id}/message"
include-method = "POST"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "504"]

[[operations]]
include-path = "/agents/{agent_id}"
include-method = "GET"
checks.object_level_authorization.enabled = false
"""


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    env = clean_environment(
        MAS_AUTH__JWT_SECRET=SECRET,
        MAS_API__MAX_WAIT="0.5",  # a generated ?wait= holds a request half a second at most
        MAS_MESSAGE_MAX_BYTES="65536",
        MAS_LOG_LEVEL="WARNING",
    )
    process = MasProcess(["up", "--port", "0"], env, tmp_path)
    try:
        line = process.wait_for(lambda line: line.strip().startswith("dashboard:"))
        process.wait_for(lambda line: "Ctrl-C stops" in line)
        yield line.split(":", 1)[1].strip().split("/dashboard", 1)[0]
    finally:
        process.terminate()


def _bearer(subject: str) -> dict[str, str]:
    token = mint_token(SECRET, subject, CALLER_SCOPES, ttl=3600)
    return {"name": "Authorization", "value": f"Bearer {token}"}


def test_schemathesis_with_every_check_finds_nothing(gateway: str, tmp_path: Path) -> None:
    users = [{"name": name, "fixedHeaders": [_bearer(name)]} for name in ("alice", "bob")]
    (tmp_path / "auth.json").write_text(json.dumps({"auth": users}))
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            "schemathesis.toml",
            "run",
            f"{gateway}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "20",
            "--seed",
            "1",
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
