"""/dead-letters: every dead letter listed with why, replayed once to its address, or discarded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from mas import Message
from mas.actors.deadletters import DeadLetter
from mas.api.auth import SCOPES
from mas.api.state import Gateway
from tests.unit.api.conftest import TokenFactory, TroubleAgent

pytestmark = pytest.mark.anyio

Problem = Callable[..., dict[str, Any]]


async def _dead_task(client: httpx.AsyncClient, token: TokenFactory, kind: str) -> str:
    """Submit a task `trouble` fails on every attempt; its id once it is dead-lettered."""
    body = {"agent": "trouble", "message_type": kind, "payload": {"n": 1}}
    submitted = await client.post("/tasks/", json=body, headers=token())
    assert submitted.status_code == 202, submitted.text
    task_id: str = submitted.json()["id"]
    done = await client.get(f"/tasks/{task_id}", params={"wait": 5}, headers=token())
    assert done.json()["status"] == "dead_lettered", done.text
    return task_id


async def _letters(client: httpx.AsyncClient, token: TokenFactory, **filters: Any) -> list[Any]:
    response = await client.get("/dead-letters/", params=filters, headers=token())
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


async def test_a_dead_letter_is_listed_with_why_and_by_whom(
    client: httpx.AsyncClient, token: TokenFactory, gw: Gateway
) -> None:
    task_id = await _dead_task(client, token, "boom")
    await gw.runtime.journal.flush()  # type: ignore[union-attr]

    [letter] = await _letters(client, token)
    assert letter["status"] == "dead"
    assert letter["reason"] == "max_attempts"
    assert letter["target"] == "agent:trouble"
    assert letter["message_type"] == "boom"
    assert letter["agent_id"] == "trouble"
    assert letter["attempts"] == 2  # TroubleAgent.max_attempts
    assert letter["error"] == {"type": "RuntimeError", "message": "boom requested by the test"}
    assert letter["task_id"] == task_id
    assert letter["node_id"] == gw.runtime.node_id
    assert letter["message"]["payload"] == {"n": 1}
    assert letter["replayed_as"] is None

    one = await client.get(f"/dead-letters/{letter['id']}", headers=token())
    assert one.json() == letter
    assert [x["id"] for x in await _letters(client, token, reason="max_attempts")] == [letter["id"]]
    assert [x["id"] for x in await _letters(client, token, task_id=task_id)] == [letter["id"]]
    assert await _letters(client, token, reason="unroutable") == []
    assert await _letters(client, token, status="replayed") == []
    assert await _letters(client, token, agent_id="someone-else") == []
    assert await _letters(client, token, target="type:echo") == []


async def test_a_replay_sends_one_copy_and_the_task_runs_again(
    client: httpx.AsyncClient,
    token: TokenFactory,
    gw: Gateway,
    problem: Problem,
    trouble: type[TroubleAgent],
) -> None:
    task_id = await _dead_task(client, token, "fragile")
    await gw.runtime.journal.flush()  # type: ignore[union-attr]
    [letter] = await _letters(client, token)
    trouble.fragile = False  # the operator fixed what made it fail

    first = await client.post(f"/dead-letters/{letter['id']}/replay", headers=token())
    assert first.status_code == 200, first.text
    replayed = first.json()
    assert replayed["status"] == "replayed"
    assert replayed["settled_by"] == "tester"
    copy_id = replayed["replayed_as"]
    assert copy_id not in (None, letter["id"])
    done = await client.get(f"/tasks/{task_id}", params={"wait": 5}, headers=token())
    assert done.json()["status"] == "succeeded", done.text
    assert done.json()["result"] == {"handled": "fragile", "calls": 3}

    again = await client.post(f"/dead-letters/{letter['id']}/replay", headers=token())
    assert again.status_code == 200, again.text
    assert again.json()["replayed_as"] == copy_id  # the first replay; nothing sent again
    await gw.runtime.settle()
    assert trouble.calls["fragile"] == 3  # two failed attempts, one replay
    records = await gw.store.trace(letter["trace_id"])
    copies = [m for m in records if m.id == copy_id]
    assert copies and copies[0].metadata["mas.replay_of"] == letter["id"]
    problem(
        await client.post(f"/dead-letters/{letter['id']}/discard", headers=token()),
        409,
        "already replayed",
    )


async def test_a_discarded_letter_is_kept_and_cannot_be_replayed(
    client: httpx.AsyncClient,
    token: TokenFactory,
    gw: Gateway,
    problem: Problem,
    trouble: type[TroubleAgent],
) -> None:
    sent = await client.post(
        "/agents/trouble/message", json={"type": "boom", "payload": {}}, headers=token()
    )
    assert sent.status_code == 202, sent.text
    await gw.runtime.settle()
    await gw.runtime.journal.flush()  # type: ignore[union-attr]
    [letter] = await _letters(client, token)
    assert letter["task_id"] is None  # a plain message, not a task's

    first = await client.post(f"/dead-letters/{letter['id']}/discard", headers=token())
    second = await client.post(f"/dead-letters/{letter['id']}/discard", headers=token())
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert second.json()["status"] == "discarded"
    assert second.json()["settled_at"] == first.json()["settled_at"]
    problem(
        await client.post(f"/dead-letters/{letter['id']}/replay", headers=token()),
        409,
        "already discarded",
    )
    assert [x["id"] for x in await _letters(client, token, status="discarded")] == [letter["id"]]
    assert trouble.calls["boom"] == 2


async def test_replaying_to_an_address_nobody_serves_keeps_the_letter(
    client: httpx.AsyncClient, token: TokenFactory, gw: Gateway, problem: Problem
) -> None:
    message = Message("work", {"x": 1}, target="agent:long-gone")
    assert gw.runtime.journal is not None
    gw.runtime.journal.dead_lettered(DeadLetter(message, "agent_stopped", "long-gone"))
    await gw.runtime.journal.flush()

    problem(
        await client.post(f"/dead-letters/{message.id}/replay", headers=token()),
        409,
        "nobody serves agent:long-gone",
    )
    kept = await client.get(f"/dead-letters/{message.id}", headers=token())
    assert kept.json()["status"] == "dead"
    assert kept.json()["reason"] == "agent_stopped"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/dead-letters/no-such-letter"),
        ("POST", "/dead-letters/no-such-letter/replay"),
        ("POST", "/dead-letters/no-such-letter/discard"),
    ],
)
async def test_an_unknown_letter_is_404(
    client: httpx.AsyncClient, token: TokenFactory, problem: Problem, method: str, path: str
) -> None:
    problem(await client.request(method, path, headers=token()), 404, "no-such-letter")


@pytest.mark.parametrize(
    "params",
    [{"status": "lost"}, {"limit": "0"}, {"limit": "501"}, {"offset": "-1"}, {"reason": "x" * 65}],
)
async def test_a_malformed_filter_is_422(
    client: httpx.AsyncClient, token: TokenFactory, problem: Problem, params: dict[str, str]
) -> None:
    problem(await client.get("/dead-letters/", params=params, headers=token()), 422)


async def test_reading_and_settling_need_their_scopes(
    client: httpx.AsyncClient, token: TokenFactory, problem: Problem
) -> None:
    problem(await client.get("/dead-letters/"), 401)
    others = [s for s in SCOPES if s not in ("dead_letters:read", "dead_letters:admin")]
    problem(await client.get("/dead-letters/", headers=token(*others)), 403, "dead_letters:read")
    reader = token("dead_letters:read")
    assert (await client.get("/dead-letters/", headers=reader)).status_code == 200
    for action in ("replay", "discard"):
        problem(
            await client.post(f"/dead-letters/x/{action}", headers=reader),
            403,
            "dead_letters:admin",
        )
