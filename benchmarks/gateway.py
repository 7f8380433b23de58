"""HTTP benchmark: echo tasks through the gateway vs a bare FastAPI route, same server.

The server (a subprocess: `mas` gateway from `create_app`, SQLite in a temporary folder, the
echo agent, plus a bare `POST /bare` route returning the same JSON a finished task has) is
driven by an aiohttp client at two concurrency levels, 8 connections (low) and 64 (saturating):
- bare: `POST /bare` -> 200 JSON;
- durable: `POST /durable` -> 200 JSON, a hand-rolled route that keeps a record: the same
  auth dependency, one row inserted and committed per request (SQLAlchemy on aiosqlite), no
  agent (what "FastAPI plus a database" costs without mas);
- task: `POST /tasks/` -> 202, then `GET /tasks/{id}?wait=10` -> 200 succeeded (two requests);
- task_one_trip: `POST /tasks/?wait=10` -> 200 succeeded (one request).
Every status is checked and every body read. Prints JSON (also benchmarks/results/gateway.json)
with the ratios task/bare per concurrency level, and a summary per level to stderr.

Why aiohttp: the client must not be the bottleneck, or the ratios flatter the gateway. An
httpx.AsyncClient topped out at ~1,100-1,200 req/s on a 2-core machine and got slower with more
connections (bare route: 1,144 req/s at 4 connections, 555 at 16, 142 at 64); with
aiohttp.ClientSession + TCPConnector(limit=concurrency) the same bare route does ~3,300 req/s at
4 to 64 connections.

Run: `uv run python benchmarks/gateway.py [--quick]` (quick: 400 per measurement, 2
repetitions; full: 3,000, 3 repetitions; the report gives the median of the repetitions).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Annotated, Any

import aiohttp
from fastapi import Depends

from mas.api.auth import Claims, require

RESULTS = Path(__file__).parent / "results" / "gateway.json"
SECRET = "benchmark-secret-" + "x" * 32
KINDS = ("bare", "durable", "task", "task_one_trip")
CONCURRENCY = (8, 64)  # low, saturating
WAIT = {"wait": "10"}


def serve(port_file: str) -> None:
    """The server side: the gateway plus a bare route, on a free port written to a file."""
    import socket

    import uvicorn
    from pydantic import SecretStr

    from agents.echo import EchoAgent
    from mas.api.app import create_app
    from mas.config import AuthSettings, Settings

    tmp = os.path.dirname(port_file)  # the parent's temporary folder, removed after the run
    settings = Settings(
        auth=AuthSettings(jwt_secret=SecretStr(SECRET)),
        database_url=f"sqlite+aiosqlite:///{tmp}/bench.db",
        log_level="WARNING",
    )
    from mas.observability import configure_logging

    configure_logging("WARNING")  # as before: no access log lines in the measurement
    app = create_app(settings, start_agents=[EchoAgent])

    @app.post("/bare")
    async def bare(body: dict[str, Any]) -> dict[str, Any]:
        return {"id": "bare", "status": "succeeded", "result": body.get("payload")}

    # What a hand-rolled endpoint that keeps a record does: the same auth, one row inserted
    # and committed per request (SQLAlchemy on aiosqlite, its own SQLite file), no agent.
    from sqlalchemy import JSON, Column, MetaData, String, Table, create_engine, event
    from sqlalchemy.ext.asyncio import create_async_engine

    records = Table(
        "records",
        MetaData(),
        Column("id", String, primary_key=True),
        Column("created_by", String),
        Column("payload", JSON),
    )
    records.metadata.create_all(create_engine(f"sqlite:///{tmp}/durable.db"))
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp}/durable.db")
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)  # mas's settings: fair

    @app.post("/durable")
    async def durable(
        body: dict[str, Any], claims: Annotated[Claims, Depends(require("tasks:write"))]
    ) -> dict[str, Any]:
        record_id = uuid.uuid4().hex
        async with engine.begin() as conn:
            await conn.execute(
                records.insert().values(
                    id=record_id, created_by=claims.subject, payload=body.get("payload")
                )
            )
        return {"id": record_id, "status": "succeeded", "result": body.get("payload")}

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # see mas up
    sock.bind(("127.0.0.1", 0))
    Path(port_file).write_text(str(sock.getsockname()[1]))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    asyncio.run(server.serve([sock]))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL and synchronous=NORMAL, as mas sets them for its own SQLite store."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    path: str,
    expect: int,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One request: its JSON body (always read), or an error on an unexpected status."""
    async with session.request(method, path, json=body, params=params) as resp:
        text = await resp.text()
        if resp.status != expect:
            raise RuntimeError(f"{method} {path}: {resp.status} (expected {expect}): {text[:300]}")
    data: dict[str, Any] = json.loads(text)
    return data


async def _one(session: aiohttp.ClientSession, kind: str, i: int) -> None:
    """One bare request, or one echo task submitted and waited for; raises unless it succeeded."""
    body = {"type": "echo", "payload": {"i": i, "text": "hello"}}
    if kind in ("bare", "durable"):
        done = await _call(session, "POST", f"/{kind}", 200, body)
    elif kind == "task_one_trip":
        done = await _call(session, "POST", "/tasks/", 200, body, WAIT)
    else:
        created = await _call(session, "POST", "/tasks/", 202, body)
        done = await _call(session, "GET", f"/tasks/{created['id']}", 200, params=WAIT)
    if done["status"] != "succeeded":
        raise RuntimeError(f"{kind}: task ended {done['status']}")


async def drive(base: str, token: str, kind: str, n: int, concurrency: int) -> float:
    """Requests (bare) or tasks (submit + wait) per second, over `concurrency` connections."""
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector) as session:
        # Open every connection before the clock starts (one bare request on each).
        await asyncio.gather(*(_one(session, "bare", -1) for _ in range(concurrency)))
        indexes = iter(range(n))  # shared by the workers; next() does not yield to the loop

        async def worker() -> None:
            for i in indexes:
                await _one(session, kind, i)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - started)


def _server_name() -> str:
    """uvicorn's version and the HTTP implementation its `auto` picks in this environment."""
    impl = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"uvicorn {importlib.metadata.version('uvicorn')} ({impl})"


def _wait_for_server(server: subprocess.Popen[bytes], port_file: str, token: str) -> str:
    """The server's base URL once its port is written and `/readyz` answers 200.

    The port is written as soon as the socket is bound; uvicorn listens only after the app's
    start-up (database, agents), so connections are refused until then.
    """
    deadline = time.monotonic() + 30
    while True:
        if server.poll() is None and time.monotonic() > deadline:
            server.kill()  # stuck: its stderr ends only once it is gone
            server.wait()
        if server.poll() is not None:
            raise RuntimeError(f"server did not start: {server.stderr.read()!r}")  # type: ignore[union-attr]
        port = Path(port_file).read_text() if os.path.exists(port_file) else ""
        if port:
            base = f"http://127.0.0.1:{port}"
            request = urllib.request.Request(
                f"{base}/readyz", headers={"Authorization": f"Bearer {token}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:
                    if resp.status == 200:
                        return base
            except OSError:  # refused (not listening yet) or 503 (not ready yet)
                pass
        time.sleep(0.05)  # polling a subprocess for start-up, not test synchronisation


def main(quick: bool) -> dict[str, Any]:
    from mas.api.auth import SCOPES, mint_token

    n, reps = (400, 2) if quick else (3000, 3)
    runs: dict[int, dict[str, list[float]]] = {c: {kind: [] for kind in KINDS} for c in CONCURRENCY}
    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", port_file],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            token = mint_token(SECRET, "bench", sorted(SCOPES), ttl=3600)
            base = _wait_for_server(server, port_file, token)
            for kind in KINDS:  # warm up every path
                asyncio.run(drive(base, token, kind, 100, CONCURRENCY[0]))
            for _ in range(reps):  # interleaved: a slow phase of the machine hits every kind
                for concurrency in CONCURRENCY:
                    for kind in KINDS:
                        rate = asyncio.run(drive(base, token, kind, n, concurrency))
                        runs[concurrency][kind].append(rate)
        finally:
            server.terminate()
            server.wait(timeout=30)
    by_concurrency: dict[str, Any] = {}
    for concurrency, level_runs in runs.items():
        medians = {kind: statistics.median(values) for kind, values in level_runs.items()}
        by_concurrency[str(concurrency)] = {
            "per_s": medians,
            "runs_per_s": level_runs,
            "ratio_task_vs_bare": medians["task"] / medians["bare"],
            "ratio_task_one_trip_vs_bare": medians["task_one_trip"] / medians["bare"],
            "ratio_task_one_trip_vs_durable": medians["task_one_trip"] / medians["durable"],
        }
    return {
        "client": f"aiohttp {aiohttp.__version__}",
        "server": _server_name(),
        "n": n,
        "reps": reps,
        "by_concurrency": by_concurrency,
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    report = main(parser.parse_args().quick)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(
        f"\n{report['client']} -> {report['server']}, n={report['n']}, median of {report['reps']}",
        file=sys.stderr,
    )
    for concurrency, level in report["by_concurrency"].items():
        print(
            f"{concurrency:>2} connections: bare route {level['per_s']['bare']:,.0f} req/s, "
            f"echo task (submit + wait) {level['per_s']['task']:,.0f} tasks/s: ratio "
            f"{level['ratio_task_vs_bare']:.2f}; one trip (POST ?wait) "
            f"{level['per_s']['task_one_trip']:,.0f} tasks/s: ratio "
            f"{level['ratio_task_one_trip_vs_bare']:.2f}; a hand-rolled durable route "
            f"{level['per_s']['durable']:,.0f} req/s: one trip / durable "
            f"{level['ratio_task_one_trip_vs_durable']:.2f}",
            file=sys.stderr,
        )
