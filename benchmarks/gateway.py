"""HTTP benchmark: echo tasks through the gateway vs a bare FastAPI route, same server.

The server (a subprocess: `mas` gateway from `create_app`, SQLite in a temporary folder, the
echo agent, plus a bare `POST /bare` route returning the same JSON a finished task has) is
driven by an httpx client with a few concurrent connections:
- bare: `POST /bare` -> 200 JSON;
- task: `POST /tasks/` -> 202, then `GET /tasks/{id}?wait=10` -> succeeded (two requests);
- task_one_trip: `POST /tasks/?wait=10` -> 200 succeeded (one request).
Prints JSON (also benchmarks/results/gateway.json) and the ratios task/bare.

Run: `uv run python benchmarks/gateway.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).parent / "results" / "gateway.json"
SECRET = "benchmark-secret-" + "x" * 32


def serve(port_file: str) -> None:
    """The server side: the gateway plus a bare route, on a free port written to a file."""
    import socket

    import uvicorn
    from pydantic import SecretStr

    from agents.echo import EchoAgent
    from mas.api.app import create_app
    from mas.config import AuthSettings, Settings

    tmp = tempfile.mkdtemp()
    settings = Settings(
        auth=AuthSettings(jwt_secret=SecretStr(SECRET)),
        database_url=f"sqlite+aiosqlite:///{tmp}/bench.db",
        log_level="WARNING",
    )
    app = create_app(settings, start_agents=[EchoAgent])

    @app.post("/bare")
    async def bare(body: dict[str, Any]) -> dict[str, Any]:
        return {"id": "bare", "status": "succeeded", "result": body.get("payload")}

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # see mas up
    sock.bind(("127.0.0.1", 0))
    Path(port_file).write_text(str(sock.getsockname()[1]))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    asyncio.run(server.serve([sock]))


async def drive(base: str, token: str, kind: str, n: int, concurrency: int) -> float:
    """Requests (bare) or tasks (submit + wait) per second."""
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                body = {"type": "echo", "payload": {"i": i, "text": "hello"}}
                if kind == "bare":
                    (await client.post("/bare", json=body)).raise_for_status()
                    continue
                if kind == "task_one_trip":
                    done = await client.post("/tasks/", json=body, params={"wait": 10})
                else:
                    created = await client.post("/tasks/", json=body)
                    created.raise_for_status()
                    done = await client.get(f"/tasks/{created.json()['id']}", params={"wait": 10})
                if done.json()["status"] != "succeeded":
                    raise RuntimeError(f"task ended {done.json()['status']}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - started)


def main(quick: bool) -> dict[str, Any]:
    from mas.api.auth import SCOPES, mint_token

    n, reps, concurrency = (200, 2, 4) if quick else (2000, 3, 8)
    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", port_file],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(port_file) or not Path(port_file).read_text():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {server.stderr.read()!r}")  # type: ignore[union-attr]
                time.sleep(0.05)  # polling a subprocess for start-up, not test synchronisation
            base = f"http://127.0.0.1:{Path(port_file).read_text()}"
            token = mint_token(SECRET, "bench", sorted(SCOPES), ttl=3600)
            kinds = ("bare", "task", "task_one_trip")
            runs: dict[str, list[float]] = {kind: [] for kind in kinds}
            for kind in kinds:  # warm up every path
                asyncio.run(drive(base, token, kind, 50, 2))
            for _ in range(reps):
                for kind in kinds:
                    runs[kind].append(asyncio.run(drive(base, token, kind, n, concurrency)))
        finally:
            server.terminate()
            server.wait(timeout=30)
    medians = {kind: statistics.median(values) for kind, values in runs.items()}
    return {
        "n": n,
        "reps": reps,
        "concurrency": concurrency,
        "per_s": medians,
        "runs_per_s": runs,
        "ratio_task_vs_bare": medians["task"] / medians["bare"],
        "ratio_task_one_trip_vs_bare": medians["task_one_trip"] / medians["bare"],
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
        f"\nbare route {report['per_s']['bare']:,.0f} req/s, echo task (submit + wait) "
        f"{report['per_s']['task']:,.0f} tasks/s: ratio {report['ratio_task_vs_bare']:.2f}; "
        f"one trip (POST ?wait) {report['per_s']['task_one_trip']:,.0f} tasks/s: ratio "
        f"{report['ratio_task_one_trip_vs_bare']:.2f}",
        file=sys.stderr,
    )
