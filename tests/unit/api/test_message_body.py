"""POST /tasks/ takes the design's Message as well as a TaskIn ("body: Message or TaskSpec").

A client that already speaks mas's Message (another mas, a TaskIQ producer, the original
design's examples) sends it as it is: its `target` routes it, its `id` is the task id (and
idempotency key), its `trace_id` continues the caller's trace, its `sender` gets replies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
        ({"type": "t", "target": "type:echo", "sender": "topic:x"}, 422, "sender"),
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


class Replier(Agent):
    """Answers with a reply Message (not a TaskResult): it goes where the message says."""

    type = "replier"

    async def handle_message(self, message: Message) -> HandlerResult:
        return message.reply({"answer": 42})


async def test_the_handlers_reply_goes_to_the_messages_sender(
    client: httpx.AsyncClient, token: Any, gw: Gateway
) -> None:
    await gw.runtime.spawn(Replier, id="replier")
    probe = Probe()
    await gw.runtime.spawn(probe.agent(), id="inbox")
    body = {"type": "ask", "target": "agent:replier", "sender": "agent:inbox", "trace_id": TRACE}
    response = await submit(client, token, body)
    assert response.status_code == 202, response.text
    (reply,) = await probe.wait_for(1)
    assert reply.correlation_id == response.json()["id"]
    assert (reply.payload, reply.sender, reply.trace_id) == ({"answer": 42}, "agent:replier", TRACE)
