"""POST /tasks/ takes the design's Message as well as a TaskIn ("body: Message or TaskSpec").

A client that already speaks mas's Message (another mas, a TaskIQ producer, the original
design's examples) sends it as it is: its `target` routes it, its `id` is the task id (and
idempotency key), its `trace_id` continues the caller's trace. The `sender` it claims is
kept in its metadata, never trusted as the message's sender.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import httpx
import pytest

from mas import Agent, HandlerResult, Message
from mas.api.state import Gateway
from mas.testing import Probe

pytestmark = pytest.mark.anyio

TRACE = "0af7651916cd43dd8448eb211c80319c"


async def submit(client: httpx.AsyncClient, token: Any, body: Any, **params: Any) -> httpx.Response:
    return await client.post("/tasks/", json=body, headers=token(), params=params)


async def test_a_message_body_is_routed_by_its_target_and_keeps_its_id_and_trace(
    client: httpx.AsyncClient, token: Any
) -> None:
    body = {
        "id": "order-17",
        "type": "summarize",
        "sender": None,
        "target": "type:echo",
        "payload": {"text": "hi"},
        "created_at": "2026-11-29T10:00:00Z",
        "metadata": {"priority": "high"},
        "trace_id": TRACE,
    }
    response = await submit(client, token, body, wait=5)
    assert response.status_code == 200, response.text
    task = response.json()
    assert (task["id"], task["type"], task["target"]) == ("order-17", "summarize", "type:echo")
    assert (task["status"], task["result"], task["trace_id"]) == (
        "succeeded",
        {"text": "hi"},
        TRACE,
    )
    # The same Message again is a repeat, not new work: its id is the idempotency key.
    again = await submit(client, token, body)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == "order-17"


@pytest.mark.parametrize(
    ("target", "routed"),
    [("agent:echo", "agent:echo"), ("type:echo", "type:echo"), ("capability:echo", "type:echo")],
)
async def test_every_kind_of_task_address_routes_a_message_body(
    client: httpx.AsyncClient, token: Any, target: str, routed: str
) -> None:
    response = await submit(client, token, {"type": "task", "target": target}, wait=5)
    assert response.status_code == 200, response.text
    assert (response.json()["target"], response.json()["status"]) == (routed, "succeeded")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        # A task goes to one agent: a topic address is not a task's target.
        ({"type": "t", "target": "topic:news"}, 422, "target"),
        ({"type": "t", "target": "echo"}, 422, "target"),
        # The two shapes do not mix: the key `target` makes it a Message.
        ({"type": "t", "target": "type:echo", "agent": "echo"}, 422, "agent"),
        ({"type": "echo", "trace_id": TRACE}, 422, "trace_id"),
        ({"type": "t", "target": "type:echo", "trace_id": "not-hex"}, 422, "trace_id"),
        ({"type": "t", "target": "type:echo", "reply_to": "agent:x"}, 422, "reply_to"),
        ({"type": "t", "target": "type:echo", "sender": "x" * 300}, 422, "sender"),
        ({"target": "type:echo"}, 422, "type"),
    ],
)
async def test_a_malformed_message_body_is_a_422_naming_the_field(
    client: httpx.AsyncClient,
    token: Any,
    problem: Callable[..., dict[str, Any]],
    body: dict[str, Any],
    status: int,
    field: str,
) -> None:
    response = await submit(client, token, body)
    errors = problem(response, status)["errors"]
    assert any(error["field"] == f"body.{field}" for error in errors), errors


async def test_an_unknown_capability_in_a_message_target_is_a_404(
    client: httpx.AsyncClient, token: Any, problem: Callable[..., dict[str, Any]]
) -> None:
    response = await submit(client, token, {"type": "t", "target": "capability:translate"})
    assert problem(response, 404, "translate")["title"] == "Unknown Capability"


class Recorder(Agent):
    """Keeps what it was sent, and answers with a reply Message (not a TaskResult)."""

    type = "recorder"
    seen: ClassVar[list[Message]]

    async def handle_message(self, message: Message) -> HandlerResult:
        Recorder.seen.append(message)
        return message.reply({"answer": 42})


async def test_mas_own_message_json_is_taken_as_it_is(
    client: httpx.AsyncClient, token: Any, gw: Gateway
) -> None:
    """`Message.to_dict()` (another mas, a TaskIQ producer) is a valid body; the sender it
    claims stays in the metadata: the handler is not told it, and no reply goes to it."""
    Recorder.seen = []
    probe = Probe()
    await gw.runtime.spawn(Recorder, id="recorder")
    await gw.runtime.spawn(probe.agent(), id="inbox")
    sent = Message(
        "ask",
        {"q": 1},
        id="from-another-mas",
        sender="agent:inbox",
        target="agent:recorder",
        correlation_id="upstream-1",
        trace_id=TRACE,
    )
    response = await submit(client, token, sent.to_dict(), wait=5)
    assert response.status_code in (200, 202), response.text
    assert response.json()["id"] == "from-another-mas"
    await gw.runtime.settle()
    (seen,) = Recorder.seen
    assert (seen.id, seen.sender, seen.correlation_id, seen.trace_id) == (
        "from-another-mas",
        None,
        "upstream-1",
        TRACE,
    )
    assert seen.metadata["sender"] == "agent:inbox"
    assert probe.messages == []  # the claimed sender got nothing


async def test_a_body_that_is_not_an_object_names_the_body(
    client: httpx.AsyncClient, token: Any, problem: Callable[..., dict[str, Any]]
) -> None:
    response = await submit(client, token, [1])
    assert problem(response, 422)["errors"][0]["field"] == "body"
