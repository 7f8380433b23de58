"""The soak's checker on small made-up histories: what it calls lost, pending, duplicated.

The soak's verdict is only as good as these rules, so each one is pinned here on a history
small enough to check by hand.
"""

from __future__ import annotations

from typing import Any

from tests.soak.checker import Effect, History, TaskState, check, classify_duplicates, render
from tests.soak.load import Attempt, Submission
from tests.soak.schedule import FaultRecord, FaultSpec

T0 = 1_000.0


def task(task_id: str, status: str = "succeeded", seq: int = 0, **fields: Any) -> TaskState:
    values: dict[str, Any] = {
        "payload": {"seq": seq, "work": 0.02},
        "result": {"seq": seq} if status == "succeeded" else None,
        "error": None,
        "attempts": 1,
        "created_at": T0 + seq,
        "finished_at": T0 + seq + 0.1 if status != "pending" else None,
        "handled_by": f"soak-w1-1-{seq % 4}",
    }
    return TaskState(task_id, status, **(values | fields))


def submission(task_id: str, seq: int, *statuses: int | str) -> Submission:
    """A keyed submission whose attempts got `statuses` (a code, or an error label)."""
    sub = Submission(seq, task_id, T0 + seq)
    for n, status in enumerate(statuses):
        attempt = Attempt(T0 + seq + n, 0.01)
        if isinstance(status, int):
            attempt.status = status
        else:
            attempt.error = status
        sub.attempts.append(attempt)
    last = sub.attempts[-1]
    sub.outcome = "accepted" if last.status is not None and last.status < 300 else "rejected"
    sub.task_id = task_id if sub.outcome == "accepted" else None
    return sub


def effect(message_id: str, node: str, at: float) -> Effect:
    return Effect(message_id, message_id, node, f"soak-{node}-0", at)


def kill(victim: str, at: float) -> FaultRecord:
    record = FaultRecord(FaultSpec("worker_kill9", at - T0, target=victim.split("-")[0]))
    record.victim, record.started, record.ended = victim, at, at
    record.detail["killed_at"] = at
    return record


def test_a_clean_history_passes() -> None:
    subs = [submission(f"t{n}", n, 202) for n in range(3)]
    tasks = {f"t{n}": task(f"t{n}", seq=n) for n in range(3)}
    effects = [effect(f"t{n}", "w1-1", T0 + n + 0.05) for n in range(3)]
    report = check(subs, [], tasks, effects, load_started=T0)
    assert report["verdict"] == {
        "passed": True,
        "reasons": [],
        "lost": 0,
        "pending": 0,
        "unexplained_duplicates": 0,
        "kill9_duplicates": 0,
    }
    assert report["effects"]["exactly_once"] == 3
    assert "PASSED" in render(report)


def test_accepted_but_missing_or_pending_is_lost_and_any_pending_task_fails() -> None:
    subs = [submission("gone", 0, 202), submission("stuck", 1, 503, 202)]
    tasks = {
        "stuck": task("stuck", "pending", seq=1),
        "never_answered": task("never_answered", "pending", seq=2),  # the client saw a 503
    }
    report = check(subs, [], tasks, [], load_started=T0)
    verdict = report["verdict"]
    assert not verdict["passed"]
    assert (verdict["lost"], verdict["pending"]) == (2, 2)
    assert report["tasks"]["missing"] == ["gone"]
    assert report["tasks"]["pending"] == ["never_answered", "stuck"]
    assert report["load"]["responses"] == {"202": 2, "503": 1}


def test_failed_tasks_are_listed_with_reasons_but_are_final() -> None:
    error = {"type": "UnknownAgent", "message": "no agent", "retryable": False}
    subs = [submission("f", 0, 202)]
    tasks = {"f": task("f", "failed", error=error)}
    report = check(subs, [], tasks, [], load_started=T0)
    assert report["verdict"]["passed"]
    assert report["tasks"]["failed_reasons"] == {"UnknownAgent": 1}


def test_a_wrong_result_or_a_success_without_effect_fails() -> None:
    subs = [submission("a", 0, 202), submission("b", 1, 202)]
    tasks = {"a": task("a", seq=0, result={"seq": 99}), "b": task("b", seq=1)}
    report = check(subs, [], tasks, [effect("a", "w1-1", T0 + 0.05)], load_started=T0)
    assert report["tasks"]["wrong_result"] == ["a"]
    assert report["effects"]["succeeded_without_effect"] == ["b"]
    assert len(report["verdict"]["reasons"]) == 2


def test_a_handling_before_the_kill_and_one_after_is_the_kill9_window() -> None:
    effects = [effect("m", "w1-1", T0 + 1.0), effect("m", "w2-1", T0 + 3.0)]
    kills = {"w1-1": T0 + 2.0}
    attributable, unexplained = classify_duplicates(effects, kills, {"m": "soak-w2-1-0"})
    assert unexplained == []
    assert [e["exposure_s"] for e in attributable] == [[1.0]]


def test_a_duplicate_is_unexplained_when_the_killed_node_had_recorded_it() -> None:
    effects = [effect("m", "w1-1", T0 + 1.0), effect("m", "w2-1", T0 + 3.0)]
    _, unexplained = classify_duplicates(effects, {"w1-1": T0 + 2.0}, {"m": "soak-w1-1-0"})
    assert "had recorded it" in unexplained[0]["why"]


def test_a_duplicate_is_unexplained_without_a_kill_between_the_handlings() -> None:
    effects = [effect("m", "w1-1", T0 + 1.0), effect("m", "w2-1", T0 + 3.0)]
    _, not_killed = classify_duplicates(effects, {}, {"m": None})
    assert "not killed" in not_killed[0]["why"]
    _, killed_later = classify_duplicates(effects, {"w1-1": T0 + 5.0}, {"m": None})
    assert "not between" in killed_later[0]["why"]
    same_node = [effect("m", "w1-1", T0 + 1.0), effect("m", "w1-1", T0 + 1.5)]
    _, twice = classify_duplicates(same_node, {"w1-1": T0 + 2.0}, {"m": None})
    assert "not between" in twice[0]["why"]


def test_a_chain_of_kills_explains_three_handlings() -> None:
    effects = [
        effect("m", "w1-1", T0 + 1.0),
        effect("m", "w2-1", T0 + 3.0),
        effect("m", "w3-1", T0 + 5.0),
    ]
    kills = {"w1-1": T0 + 2.0, "w2-1": T0 + 4.0}
    attributable, unexplained = classify_duplicates(effects, kills, {"m": "soak-w3-1-0"})
    assert (len(attributable), unexplained) == (1, [])


def test_recovery_is_the_first_prompt_success_sent_after_the_end() -> None:
    outage = FaultRecord(FaultSpec("postgres_outage", 1.0, duration=2.0))
    outage.started, outage.ended = T0 + 1.0, T0 + 3.0
    subs = [
        submission("during", 2, 503, 202),  # sent during the outage: not a recovery
        submission("slow", 3, 202),  # sent after, but took too long
        submission("ok", 4, 202),
    ]
    tasks = {
        "during": task("during", seq=2),
        "slow": task("slow", seq=3, finished_at=T0 + 3 + 5.0),
        "ok": task("ok", seq=4),
    }
    effects = [effect(i, "w1-1", T0 + 9) for i in tasks]
    report = check(subs, [outage], tasks, effects, load_started=T0, healthy_latency=2.0)
    fault = report["faults"][0]
    assert fault["recovery_s"] == 1.0  # "ok" was first sent at T0 + 4
    assert (fault["started"], fault["ended"], fault["submissions"]) == (1.0, 3.0, 3)
    assert fault["responses"] == {"503": 1, "202": 3}


def test_pending_tasks_and_duplicates_are_attributed_to_the_fault_window() -> None:
    first = kill("w1-1", T0 + 1.5)
    second = FaultRecord(FaultSpec("broker_cut", 5.0))
    second.started = second.ended = T0 + 5.0
    subs = [submission("a", 1, 202), submission("b", 6, 202)]
    tasks = {"a": task("a", seq=1, handled_by="soak-w2-1-0"), "b": task("b", "pending", seq=6)}
    effects = [effect("a", "w1-1", T0 + 1.2), effect("a", "w2-1", T0 + 2.0)]
    report = check(subs, [first, second], tasks, effects, load_started=T0)
    assert [f["pending"] for f in report["faults"]] == [0, 1]
    assert [f["duplicates_kill9"] for f in report["faults"]] == [1, 0]
    assert report["verdict"]["kill9_duplicates"] == 1
    assert report["effects"]["kill9"]["exposure_s"]["max"] == 0.3


def test_a_history_survives_its_json_form() -> None:
    subs = [submission("a", 1, "connect_error", 503, 202)]
    faults = [kill("w1-1", T0 + 1.5)]
    tasks = {"a": task("a", seq=1, handled_by="soak-w2-1-0")}
    effects = [effect("a", "w1-1", T0 + 1.2), effect("a", "w2-1", T0 + 2.0)]
    history = History(T0, subs, faults, tasks, effects)
    again = History.from_json(history.to_json())
    assert again == history
    assert again.judge() == check(subs, faults, tasks, effects, load_started=T0)
