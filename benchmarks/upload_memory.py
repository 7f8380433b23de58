"""Memory of a gateway under huge uploads: 100 clients each streaming 100 MB at `mas up`.

A body is read only for a caller with a valid token, and never past MAS_MESSAGE_MAX_BYTES
(`mas/api/admission.py`). This measures what that is worth: the server's resident memory
(VmRSS, polled every 20 ms) while N clients stream chunked bodies (no Content-Length) as fast
as the server takes them, first without a token, then with a valid one. Each client stops
when the server answers or closes. Reported: idle RSS, the peak during each phase, the peak
growth over idle, the answers, and how many bytes the clients managed to send.

Run: `uv run python benchmarks/upload_memory.py [--clients 100] [--megabytes 100]`.
JSON on stdout (also benchmarks/results/upload_memory.json), a summary on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mas.api.auth import SCOPES, mint_token  # noqa: E402

SECRET = "u" * 24 + "-upload-benchmark-secret-" + "v" * 24
CHUNK = b"x" * 65536


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def upload(port: int, token: str | None, megabytes: int) -> tuple[str, int]:
    """Stream a chunked POST /tasks/; returns (answer, bytes sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "POST /tasks/ HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n"
    writer.write(head.encode())
    sent = 0
    answer = asyncio.ensure_future(reader.readline())
    try:
        while sent < megabytes * 1_048_576 and not answer.done():
            writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
            sent += len(CHUNK)
            await writer.drain()
        if not answer.done():
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        status_line = await asyncio.wait_for(answer, 60)
        status = status_line.split()[1].decode() if status_line else "closed"
    except (ConnectionError, TimeoutError):
        status = "reset"
    finally:
        answer.cancel()
        writer.close()
    return status, sent


async def phase(
    port: int, pid: int, token: str | None, clients: int, megabytes: int
) -> dict[str, Any]:
    peak = rss_bytes(pid)
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes(pid))
            await asyncio.sleep(0.02)  # sampling period of the measurement

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    try:
        results = await asyncio.gather(*(upload(port, token, megabytes) for _ in range(clients)))
    finally:
        done.set()
        await sampler
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss": peak,
        "answers": dict(Counter(status for status, _ in results)),
        "bytes_sent": sum(sent for _, sent in results),
    }


def start_server(tmp: Path) -> tuple[subprocess.Popen[str], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAS_")}
    env |= {"MAS_AUTH__JWT_SECRET": SECRET, "PYTHONUNBUFFERED": "1", "MAS_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mas.cli", "up", "--port", "0", "--log-level", "WARNING"],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("mas up: "):
            return process, int(line.split()[2].rsplit(":", 1)[1])
    process.kill()
    raise RuntimeError("mas up did not start within 60 s")


async def main(clients: int, megabytes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        process, port = start_server(Path(tmp))
        try:
            token = mint_token(SECRET, "bench", sorted(SCOPES), ttl=600)
            await upload(port, token, 0)  # warm the route once
            await asyncio.sleep(1)  # idle settles (allocator, lazy imports)
            idle = rss_bytes(process.pid)
            anonymous = await phase(port, process.pid, None, clients, megabytes)
            authenticated = await phase(port, process.pid, token, clients, megabytes)
        finally:
            process.terminate()
            process.wait(30)
    for result in (anonymous, authenticated):
        result["peak_growth_mib"] = round((result["peak_rss"] - idle) / 1_048_576, 1)
    return {
        "clients": clients,
        "megabytes_each": megabytes,
        "idle_rss_mib": round(idle / 1_048_576, 1),
        "without_token": anonymous,
        "with_token": authenticated,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    report = asyncio.run(main(args.clients, args.megabytes))
    out = json.dumps(report, indent=2)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / "upload_memory.json").write_text(out)
    print(out)
    for name in ("without_token", "with_token"):
        r = report[name]
        print(
            f"{name}: {args.clients} x {args.megabytes} MB chunked -> {r['answers']} in "
            f"{r['seconds']} s; peak RSS {r['peak_growth_mib']} MiB over idle "
            f"({report['idle_rss_mib']} MiB); {r['bytes_sent'] / 1_048_576:.0f} MiB sent",
            file=sys.stderr,
        )
