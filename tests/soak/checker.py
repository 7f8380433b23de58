"""The soak's checker: reads what happened (client log, fault log, database) and judges it.

Verdict (all must hold for `passed`):

- **Nothing lost**: every task the gateway accepted (a 2xx to the client) exists in the
  database in a final state (succeeded, failed, dead_lettered, cancelled).
- **Nothing pending**: no task in the run's database is `pending` or `running` at the end,
  accepted or not (a task the gateway recorded and the client never heard of is still the
  system's to finish).
- **One final state, the right one**: a succeeded task's result is what the soak agent
  returns for its payload (`{"seq": payload.seq}`). Failed and dead-lettered tasks are not a
  verdict failure (they are final), but are listed with their reasons.
- **Effects once per message**, except after a `kill -9`. The soak agent writes one effects
  row per handling. A message handled k >= 2 times has k - 1 *extra handlings*. They are
  **attributable to a kill -9** when, with the handlings ordered by effect time
  a_1 <= ... <= a_k, every handling i < k was made by a worker incarnation that the harness
  killed with SIGKILL at a time K_i with a_i <= K_i <= a_(i+1) (it handled the message, then
  died, and only then did another process handle it), and mas's record of the message
  (`messages.handled_by`) does not name an agent of that incarnation (the killed process had
  not committed that it handled the message, so nobody could know). Every other extra
  handling is **unexplained** and fails the verdict. A succeeded task whose message left no
  effect at all fails it too.

Recovery of a fault: the time from its end (proxy restored; the gateway's replacement ready;
a worker dead, the others carrying on; a cut when injected) to the first submission, sent at
or after that end, that was accepted on its first attempt and whose task succeeded within
`healthy_latency` seconds of that attempt. A fault's window runs from its start to the next
fault's start. Submissions are counted in the window of their first attempt; a lost or
pending task in the window in which the client got its last answer about it (a task is
matched to its submission by the id an answer named, its key, or its payload's `seq`); a
duplicate with the kill that explains it, or else in the window in which the message was
handled again.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from tests.soak.load import Attempt, Submission
from tests.soak.schedule import FaultRecord, FaultSpec

__all__ = ["Effect", "History", "TaskState", "check", "render"]

FINAL = frozenset({"succeeded", "failed", "dead_lettered", "cancelled"})
LISTED = 20  # ids listed per finding in the report (counts are always complete)


@dataclass(frozen=True)
class TaskState:
    """A task row as the database holds it at the end (times as time.time() floats)."""

    id: str
    status: str
    payload: dict[str, Any]
    result: Any
    error: dict[str, Any] | None
    attempts: int
    created_at: float
    finished_at: float | None
    handled_by: str | None  # messages.handled_by of the task's message


@dataclass(frozen=True)
class Effect:
    """One handling, as the soak agent recorded it."""

    message_id: str
    task_id: str | None
    node: str  # the worker incarnation (MAS_NODE_ID)
    agent_id: str
    at: float


@dataclass
class History:
    """Everything the checker reads, as one JSON file (history.json beside the process logs):
    the checker can be run again on it (`benchmarks/chaos.py --recheck FILE`)."""

    load_started: float
    submissions: list[Submission]
    faults: list[FaultRecord]
    tasks: dict[str, TaskState]
    effects: list[Effect]

    def to_json(self) -> str:
        return json.dumps(
            {
                "load_started": self.load_started,
                "submissions": [asdict(s) for s in self.submissions],
                "faults": [f.to_dict() | {"spec": asdict(f.spec)} for f in self.faults],
                "tasks": [asdict(t) for t in self.tasks.values()],
                "effects": [asdict(e) for e in self.effects],
            }
        )

    def judge(self, healthy_latency: float = 2.0) -> dict[str, Any]:
        """The checker's report on this history."""
        return check(
            self.submissions,
            self.faults,
            self.tasks,
            self.effects,
            load_started=self.load_started,
            healthy_latency=healthy_latency,
        )

    @classmethod
    def from_json(cls, text: str) -> History:
        data = json.loads(text)
        submissions = []
        for raw in data["submissions"]:
            attempts = [Attempt(**a) for a in raw.pop("attempts")]
            submissions.append(Submission(**raw, attempts=attempts))
        faults = []
        for raw in data["faults"]:
            record = FaultRecord(FaultSpec(**raw["spec"]), raw["started"], raw["ended"])
            record.victim, record.detail = raw["victim"], raw["detail"]
            faults.append(record)
        tasks = {raw["id"]: TaskState(**raw) for raw in data["tasks"]}
        effects = [Effect(**raw) for raw in data["effects"]]
        return cls(data["load_started"], submissions, faults, tasks, effects)


def _kills(faults: Iterable[FaultRecord]) -> dict[str, float]:
    """Incarnation -> when the harness sent it SIGKILL (kill -9 faults only)."""
    return {
        f.victim: f.detail.get("killed_at") or f.started
        for f in faults
        if f.spec.kind.endswith("kill9") and f.victim
    }


def _node_of(agent_id: str | None) -> str | None:
    """`soak-w2-1-3` -> `w2-1` (worker agents are `<type>-<node>-<n>`)."""
    if agent_id is None or agent_id.count("-") < 2:
        return None
    return agent_id.split("-", 1)[1].rsplit("-", 1)[0]


def classify_duplicates(
    effects: list[Effect], kills: dict[str, float], handled_by: dict[str, str | None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(attributable to a kill -9, unexplained): one entry per message handled twice or more."""
    by_message: dict[str, list[Effect]] = defaultdict(list)
    for effect in effects:
        by_message[effect.message_id].append(effect)
    attributable, unexplained = [], []
    for message_id, handlings in by_message.items():
        if len(handlings) < 2:
            continue
        handlings.sort(key=lambda e: e.at)
        recorded_node = _node_of(handled_by.get(message_id))
        exposures = []
        why = ""
        for earlier, later in itertools.pairwise(handlings):
            killed = kills.get(earlier.node)
            if killed is None:
                why = f"{earlier.node} handled it and was not killed with SIGKILL"
            elif not earlier.at <= killed <= later.at:
                why = f"{earlier.node} was killed at {killed:.3f}, not between the handlings"
            elif recorded_node == earlier.node:
                why = f"{earlier.node} had recorded it before it was killed"
            else:
                exposures.append(killed - earlier.at)
                continue
            break
        entry = {
            "message_id": message_id,
            "task_id": handlings[0].task_id,
            "handlings": [{"node": e.node, "agent_id": e.agent_id, "at": e.at} for e in handlings],
            "recorded_by": handled_by.get(message_id),
        }
        if why:
            unexplained.append(entry | {"why": why})
        else:
            attributable.append(entry | {"exposure_s": exposures})
    return attributable, unexplained


def _window_index(starts: list[float], at: float) -> int:
    """-1 before the first fault, else the index of the last fault started at or before `at`."""
    index = -1
    for n, start in enumerate(starts):
        if start <= at:
            index = n
    return index


def _healthy(sub: Submission, task: TaskState | None, healthy_latency: float) -> bool:
    first = sub.attempts[0] if sub.attempts else None
    return (
        first is not None
        and first.status is not None
        and 200 <= first.status < 300
        and task is not None
        and task.status == "succeeded"
        and task.finished_at is not None
        and task.finished_at - first.at <= healthy_latency
    )


def _expected_result(task: TaskState) -> dict[str, Any]:
    return {"seq": task.payload.get("seq")}


def check(
    submissions: list[Submission],
    faults: list[FaultRecord],
    tasks: dict[str, TaskState],
    effects: list[Effect],
    *,
    load_started: float,
    healthy_latency: float = 2.0,
) -> dict[str, Any]:
    """The report (JSON-ready); `report["verdict"]["passed"]` is the soak's verdict."""

    def rel(at: float | None) -> float | None:
        return None if at is None else round(at - load_started, 3)

    accepted = [s for s in submissions if s.outcome == "accepted"]
    accepted_ids = {s.task_id for s in accepted if s.task_id is not None}
    # Which submission a task came from: the id a response named, the key, or else the
    # payload's `seq` (a keyless task whose answer named no id, a 400 say).
    by_seq = {s.seq: s for s in submissions}
    submission_of = {i: by_seq.get(t.payload.get("seq", -1)) for i, t in tasks.items()}
    submission_of |= {a.task_id: s for s in submissions for a in s.attempts if a.task_id}
    submission_of |= {s.key: s for s in submissions if s.key is not None}
    missing = sorted(i for i in accepted_ids if i not in tasks)
    not_final = sorted(i for i, t in tasks.items() if t.status not in FINAL)
    lost = sorted(set(missing) | {i for i in not_final if i in accepted_ids})
    wrong = sorted(
        i for i, t in tasks.items() if t.status == "succeeded" and t.result != _expected_result(t)
    )
    failed = [t for t in tasks.values() if t.status in FINAL - {"succeeded"}]
    effect_counts = Counter(e.message_id for e in effects)
    silent = sorted(
        i for i, t in tasks.items() if t.status == "succeeded" and i not in effect_counts
    )
    handled_by = {i: t.handled_by for i, t in tasks.items()}
    attributable, unexplained = classify_duplicates(effects, _kills(faults), handled_by)
    extra = sum(n - 1 for n in effect_counts.values() if n > 1)
    exposures = [x for entry in attributable for x in entry["exposure_s"]]

    # Per fault: its window's submissions, what they were answered, what went wrong.
    starts = [f.started for f in faults]
    by_window: dict[int, list[Submission]] = defaultdict(list)
    for sub in submissions:
        by_window[_window_index(starts, sub.first_at)].append(sub)

    def window_of_task(task_id: str) -> int:
        """The window in which the client got its last answer about the task (the fault
        that struck it), or, for a task the client did not submit, when it was created."""
        sub = submission_of.get(task_id)
        if sub is not None and sub.attempts:
            last = sub.attempts[-1]
            return _window_index(starts, last.at + last.seconds)
        task = tasks.get(task_id)
        return _window_index(starts, task.created_at if task else load_started)

    def window_of_duplicate(entry: dict[str, Any]) -> int:
        """A kill -9 duplicate belongs to the (first) kill; another to the window in which
        the message was handled again (the fault struck while the first handling ran)."""
        killed = [e["node"] for e in entry["handlings"][:-1]]
        for n, fault in enumerate(faults):
            if "exposure_s" in entry and fault.victim in killed:
                return n
        return _window_index(starts, entry["handlings"][-1]["at"])

    for entry in unexplained:
        n = window_of_duplicate(entry)
        entry["fault_window"] = (
            "before the first fault" if n < 0 else f"#{n + 1} {faults[n].spec.kind}"
        )

    ordered = sorted(submissions, key=lambda s: s.first_at)
    fault_reports = []
    for n, fault in enumerate(faults):
        window = by_window.get(n, [])
        after = (s for s in ordered if s.first_at >= fault.ended)
        recovered = next(
            (s for s in after if _healthy(s, tasks.get(s.task_id or ""), healthy_latency)), None
        )
        fault_reports.append(
            fault.to_dict()
            | {
                "started": rel(fault.started),
                "ended": rel(fault.ended),
                "recovery_s": None
                if recovered is None
                else round(recovered.first_at - fault.ended, 3),
                "submissions": len(window),
                "accepted": sum(s.outcome == "accepted" for s in window),
                "outcomes": dict(Counter(s.outcome for s in window)),
                "responses": dict(Counter(a.label for s in window for a in s.attempts)),
                "lost": sum(window_of_task(i) == n for i in lost),
                "pending": sum(window_of_task(i) == n for i in not_final),
                "duplicates_kill9": sum(window_of_duplicate(e) == n for e in attributable),
                "duplicates_unexplained": sum(window_of_duplicate(e) == n for e in unexplained),
            }
        )

    baseline = [
        t.finished_at - s.first_at
        for s in by_window.get(-1, [])
        if (t := tasks.get(s.task_id or "")) is not None and t.finished_at is not None
    ]
    reasons = []
    if lost:
        reasons.append(f"{len(lost)} accepted task(s) lost ({len(missing)} not in the database)")
    if not_final:
        reasons.append(f"{len(not_final)} task(s) left pending or running")
    if unexplained:
        reasons.append(f"{len(unexplained)} message(s) handled more than once, unexplained")
    if wrong:
        reasons.append(f"{len(wrong)} succeeded task(s) with a wrong result")
    if silent:
        reasons.append(f"{len(silent)} succeeded task(s) whose handler left no effect")
    outcomes = Counter(s.outcome for s in submissions)
    return {
        "verdict": {
            "passed": not reasons,
            "reasons": reasons,
            "lost": len(lost),
            "pending": len(not_final),
            "unexplained_duplicates": len(unexplained),
            "kill9_duplicates": len(attributable),
        },
        "load": {
            "submitted": len(submissions),
            "keyed": sum(s.key is not None for s in submissions),
            "outcomes": dict(outcomes),
            "accepted_first_try": sum(len(s.attempts) == 1 for s in accepted),
            "retried": sum(len(s.attempts) > 1 for s in submissions),
            "responses": dict(Counter(a.label for s in submissions for a in s.attempts)),
            "baseline_latency_s": _quantiles(baseline),
        },
        "tasks": {
            "in_database": len(tasks),
            "by_status": dict(Counter(t.status for t in tasks.values())),
            "not_accepted_by_status": dict(
                Counter(t.status for t in tasks.values() if t.id not in accepted_ids)
            ),
            "lost": lost[:LISTED],
            "missing": missing[:LISTED],
            "pending": not_final[:LISTED],
            "pending_client_view": dict(
                Counter(_client_view(submission_of.get(i)) for i in not_final)
            ),
            "wrong_result": wrong[:LISTED],
            "failed": [
                {"id": t.id, "status": t.status, "error": t.error, "accepted": t.id in accepted_ids}
                for t in failed[:LISTED]
            ],
            "failed_reasons": dict(
                Counter(str((t.error or {}).get("type", t.status)) for t in failed)
            ),
        },
        "effects": {
            "handlings": len(effects),
            "messages": len(effect_counts),
            "exactly_once": sum(n == 1 for n in effect_counts.values()),
            "extra_handlings": extra,
            "succeeded_without_effect": silent[:LISTED],
            "not_a_task": sorted(set(effect_counts) - set(tasks))[:LISTED],
            "kill9": {
                "messages": len(attributable),
                "extra_handlings": sum(len(e["handlings"]) - 1 for e in attributable),
                "exposure_s": _quantiles(exposures),
                "items": attributable[:LISTED],
            },
            "unexplained": unexplained[:LISTED],
        },
        "faults": fault_reports,
        "by_kind": _by_kind(fault_reports),
    }


def _client_view(sub: Submission | None) -> str:
    """What the client was told about a task: `keyed 202`, `keyless 503`, `not named`..."""
    if sub is None:
        return "not submitted by the client"
    answers = "/".join(dict.fromkeys(a.label for a in sub.attempts))
    return f"{'keyed' if sub.key else 'keyless'} {sub.outcome} ({answers})"


def _by_kind(fault_reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The per-fault figures summed (and recovery times summarised) per kind of fault."""
    kinds: dict[str, dict[str, Any]] = {}
    for fault in fault_reports:
        kind = kinds.setdefault(
            fault["kind"],
            {
                "count": 0,
                "submissions": 0,
                "lost": 0,
                "pending": 0,
                "duplicates_kill9": 0,
                "duplicates_unexplained": 0,
                "responses": Counter(),
                "recovery": [],
                "not_recovered": 0,
            },
        )
        kind["count"] += 1
        for name in ("submissions", "lost", "pending", "duplicates_kill9"):
            kind[name] += fault[name]
        kind["duplicates_unexplained"] += fault["duplicates_unexplained"]
        kind["responses"].update(fault["responses"])
        if fault["recovery_s"] is None:
            kind["not_recovered"] += 1
        else:
            kind["recovery"].append(fault["recovery_s"])
    for kind in kinds.values():
        kind["responses"] = dict(kind["responses"])
        kind["recovery_s"] = _quantiles(kind.pop("recovery"))
    return kinds


def _quantiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 4),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 4),
        "max": round(ordered[-1], 4),
    }


def render(report: dict[str, Any]) -> str:
    """The human summary of a report."""
    verdict, load, tasks, effects = (
        report["verdict"],
        report["load"],
        report["tasks"],
        report["effects"],
    )
    lines = [
        f"verdict: {'PASSED' if verdict['passed'] else 'FAILED'}"
        + "".join(f"\n  - {reason}" for reason in verdict["reasons"]),
        f"load: {load['submitted']} tasks submitted ({load['keyed']} with an Idempotency-Key), "
        f"outcomes {load['outcomes']}, {load['retried']} retried",
        f"  responses (every attempt): {load['responses']}",
        f"database: {tasks['in_database']} tasks {tasks['by_status']}; "
        f"not accepted: {tasks['not_accepted_by_status']}",
        f"  lost {verdict['lost']}, pending {verdict['pending']}, "
        f"wrong result {len(tasks['wrong_result'])}, failed reasons {tasks['failed_reasons']}",
        f"effects: {effects['handlings']} handlings of {effects['messages']} messages, "
        f"{effects['exactly_once']} exactly once; extra handlings {effects['extra_handlings']}: "
        f"{effects['kill9']['extra_handlings']} in a kill -9 window "
        f"(exposure {effects['kill9']['exposure_s']}), "
        f"{verdict['unexplained_duplicates']} message(s) unexplained",
        "faults:",
    ]
    for fault in report["faults"]:
        recovery = fault["recovery_s"]
        lines.append(
            f"  +{fault['started']:7.1f}s {fault['kind']:<18} "
            f"{fault['victim'] or fault['target']:<6}"
            f" {fault['ended'] - fault['started']:5.1f}s  recovery "
            + ("never" if recovery is None else f"{recovery:5.1f}s")
            + f"  lost {fault['lost']} pending {fault['pending']}"
            f" dup kill9/unexplained {fault['duplicates_kill9']}/{fault['duplicates_unexplained']}"
            f"  responses {fault['responses']}"
        )
    lines.append("by kind:")
    for name, kind in report["by_kind"].items():
        recovery = kind["recovery_s"] or {}
        lines.append(
            f"  {name:<18} x{kind['count']:<3} lost {kind['lost']} pending {kind['pending']}"
            f" dup kill9/unexplained {kind['duplicates_kill9']}/{kind['duplicates_unexplained']}"
            f"  recovery p50 {recovery.get('p50')} max {recovery.get('max')}"
            f" (never: {kind['not_recovered']})  responses {kind['responses']}"
        )
    unexpected = report.get("meta", {}).get("unexpected_exits")
    if unexpected:
        lines.append(f"processes that exited unasked (name: code): {unexpected}")
    if tasks["pending_client_view"]:
        lines.append(f"pending tasks, as the client saw them: {tasks['pending_client_view']}")
    return "\n".join(lines)
