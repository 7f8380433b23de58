"""The soak's client: tasks submitted over HTTP at a steady rate, every response recorded.

What the client does (the retry policy the checker's verdict assumes):

- A *keyed* task (the default share, `keyed_share`) carries an `Idempotency-Key` the client
  made for it, from its first attempt on: it cannot know whether an attempt that failed in
  flight created the task, so every attempt must name the same task. It is retried after a
  connection error, a timeout, 408, 429 and any 5xx, waiting Retry-After (capped) or an
  exponential backoff with jitter, until `give_up` seconds after its first attempt
  ("abandoned"). Any other answer is final: 2xx "accepted", a 4xx "rejected" (a 400 during a
  broker outage tells the client the mistake is its own, so it does not retry).
- A *keyless* task (the rest) is the default path of a client that sends no key: retried only
  when the request certainly never reached the gateway (the connection could not be made);
  after any other failure its outcome is "unknown" (the gateway may or may not hold it), and a
  non-2xx answer is final ("rejected", whatever the code).

Submissions are launched on a fixed schedule (`rate` per second); each runs as its own task,
at most `max_in_flight` at once (beyond that the schedule slips, and the report says so).
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import anyio
import httpx

__all__ = ["Attempt", "LoadGenerator", "Submission"]

Outcome = Literal["accepted", "rejected", "abandoned", "unknown", "in_flight"]

REQUEST_TIMEOUT = 15.0  # seconds per attempt: longer than the gateway's own 10 s write timeout
RETRY_AFTER_CAP = 5.0
BACKOFF_BASE = 0.2
BACKOFF_MAX = 5.0
RETRY_STATUS = frozenset({408, 429})


@dataclass
class Attempt:
    """One HTTP request: when, and what came back (a status code or an error kind)."""

    at: float  # time.time() when sent
    seconds: float
    status: int | None = None
    error: str | None = None  # "connect_error" | "timeout" | "disconnected" | ...
    task_id: str | None = None

    @property
    def label(self) -> str:
        if self.status is not None:
            return str(self.status)
        return self.error or "in_flight"


@dataclass
class Submission:
    """One logical task of the client and every attempt it made."""

    seq: int
    key: str | None
    planned_at: float
    attempts: list[Attempt] = field(default_factory=list)
    outcome: Outcome = "in_flight"
    task_id: str | None = None  # from a 2xx (or the key)

    @property
    def first_at(self) -> float:
        return self.attempts[0].at if self.attempts else self.planned_at

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), RETRY_AFTER_CAP) if value is not None else None
    except ValueError:
        return None


# A 503 for a task whose record is queued names it in its detail
# (mas.api.tasks, TaskService._recorded).
_NAMED_TASK = re.compile(r"task '([^']+)'")


def _task_id(response: httpx.Response) -> str | None:
    """The task a response is about: its body's `id`, or the task a problem's detail names."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    task_id = body.get("id")
    if isinstance(task_id, str):
        return task_id
    named = _NAMED_TASK.search(str(body.get("detail", "")))
    return named.group(1) if named else None


@dataclass(eq=False)
class LoadGenerator:
    """Submits `soak` tasks to the gateway at `rate` per second until `stop()`."""

    base_url: str
    token: str
    rate: float
    work: float  # seconds of simulated I/O per task (payload.work)
    keyed_share: float = 0.75
    give_up: float = 60.0
    max_in_flight: int = 256
    seed: int = 0
    submissions: list[Submission] = field(default_factory=list)
    slipped: int = 0  # launches later than planned by more than a second
    _stopping: bool = False
    _random: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def stop(self) -> None:
        self._stopping = True

    async def run(self, start: float) -> None:
        """Launch submissions from `start` (time.time()) until `stop()`; returns once every
        one has an outcome."""
        limits = httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=64)
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            httpx.AsyncClient(base_url=self.base_url, headers=headers, limits=limits) as client,
            anyio.create_task_group() as group,
        ):
            limiter = anyio.Semaphore(self.max_in_flight)
            seq = 0
            while not self._stopping:
                planned = start + seq / self.rate
                await anyio.sleep(max(0.0, planned - time.time()))  # pacing: workload
                if self._stopping:
                    break
                await limiter.acquire()
                if time.time() - planned > 1.0:
                    self.slipped += 1
                keyed = self._random.random() < self.keyed_share
                submission = Submission(seq, f"soak-{uuid.uuid4().hex}" if keyed else None, planned)
                self.submissions.append(submission)
                group.start_soon(self._submit, client, submission, limiter)
                seq += 1

    async def _submit(
        self, client: httpx.AsyncClient, submission: Submission, limiter: anyio.Semaphore
    ) -> None:
        try:
            await self._attempts(client, submission)
        finally:
            limiter.release()

    async def _attempts(self, client: httpx.AsyncClient, submission: Submission) -> None:
        body = {"type": "soak", "payload": {"seq": submission.seq, "work": self.work}}
        headers = {} if submission.key is None else {"Idempotency-Key": submission.key}
        keyed = submission.key is not None
        delay = BACKOFF_BASE
        while True:
            sent = time.time()
            attempt = Attempt(sent, 0.0)
            submission.attempts.append(attempt)
            wait: float | None = None
            try:
                response = await client.post(
                    "/tasks/", json=body, headers=headers, timeout=REQUEST_TIMEOUT
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                attempt.error = (
                    "connect_error" if isinstance(exc, httpx.ConnectError) else ("connect_timeout")
                )
                retry = True  # never reached the gateway: safe even without a key
            except httpx.TimeoutException:
                attempt.error = "timeout"
                retry = keyed
            except httpx.TransportError as exc:
                attempt.error = f"disconnected:{type(exc).__name__}"
                retry = keyed
            else:
                attempt.status = response.status_code
                attempt.task_id = _task_id(response)
                if response.is_success:
                    submission.outcome = "accepted"
                    submission.task_id = attempt.task_id or submission.key
                    attempt.seconds = time.time() - sent
                    return
                retry = keyed and (
                    response.status_code in RETRY_STATUS or response.status_code >= 500
                )
                wait = _retry_after(response)
            attempt.seconds = time.time() - sent
            if not retry:
                submission.outcome = "rejected" if attempt.status is not None else "unknown"
                return
            if wait is None:
                wait = delay * (0.5 + self._random.random())
                delay = min(delay * 2, BACKOFF_MAX)
            if time.time() + wait - submission.first_at > self.give_up:
                submission.outcome = "abandoned"
                return
            await anyio.sleep(wait)  # the client's backoff: workload, not synchronisation

    def progress(self) -> str:
        """One line: what was submitted so far and how it went."""
        outcomes = Counter(s.outcome for s in self.submissions)
        codes = Counter(a.label for s in self.submissions for a in s.attempts)
        top = ", ".join(f"{label}: {n}" for label, n in codes.most_common(6))
        return (
            f"submitted {len(self.submissions)}, accepted {outcomes['accepted']}, "
            f"in flight {outcomes['in_flight']}, rejected {outcomes['rejected']}, "
            f"abandoned {outcomes['abandoned']}, unknown {outcomes['unknown']}; "
            f"responses {{{top}}}"
        )
