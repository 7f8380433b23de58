"""One trace across processes: `mas api` and `mas worker` export spans over OTLP to a real
endpoint the test runs, and the spans link from the HTTP request to the worker's handling
(and, for an ask, back with the reply), with the trace id the client sent.
"""

from __future__ import annotations

import pytest

from mas.testing import eventually
from tests.amqp_support import amqp_scope, amqp_vhost_url
from tests.integration.system_support import System, system
from tests.otel_support import OtlpReceiver, ReceivedSpan

__all__ = ["amqp_scope", "amqp_vhost_url", "system"]

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

TASK_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ASK_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER = "00f067aa0ba902b7"


def otel(receiver: OtlpReceiver, service: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


def one(spans: list[ReceivedSpan], service: str, kind: str, name: str) -> ReceivedSpan:
    found = [s for s in spans if (s.service, s.kind, s.name) == (service, kind, name)]
    assert len(found) == 1, "\n".join(map(str, spans))
    return found[0]


async def test_a_task_and_an_ask_are_each_one_trace_from_the_gateway_to_the_worker(
    system: System,
) -> None:
    with OtlpReceiver() as receiver:
        worker = system.start(
            ["worker", "--agents", "agents.echo:EchoAgent"], **otel(receiver, "w")
        )
        node = worker.wait_for(lambda line: line.startswith("mas worker ")).split()[2][:-1]
        worker.wait_for(lambda line: "ready; SIGTERM" in line)
        assert any(line.startswith("  traces: OTLP to ") for line in worker.lines)
        system.api(**otel(receiver, "gw"))
        async with system.client() as client:
            submitted = await client.post(
                "/tasks/",
                json={"type": "echo", "payload": {"n": 1}},
                headers={"traceparent": f"00-{TASK_TRACE}-{CALLER}-01"},
            )
            assert submitted.status_code == 202, submitted.text
            task_id = submitted.json()["id"]
            done = await client.get(f"/tasks/{task_id}", params={"wait": 30})
            assert done.json()["status"] == "succeeded", done.text
            asked = await client.post(
                f"/agents/echo-{node}-0/message",
                json={"type": "ping", "payload": {"x": 1}},
                params={"wait": 30},
                headers={"traceparent": f"00-{ASK_TRACE}-{CALLER}-01"},
            )
            assert asked.status_code == 200, asked.text

        def exported() -> bool:
            task, ask = receiver.trace(TASK_TRACE), receiver.trace(ASK_TRACE)
            return any(s.service == "w" for s in task) and len(ask) >= 5

        await eventually(exported, timeout=30, interval=0.1)

    # The task: request -> publish (by the gateway's outbox relay) -> handling on the worker.
    task = receiver.trace(TASK_TRACE)
    request = one(task, "gw", "SERVER", "POST /tasks/")
    publish = one(task, "gw", "PRODUCER", "publish type:echo")
    handled = one(task, "w", "CONSUMER", "handle task")
    assert request.parent_id == CALLER
    assert publish.parent_id == request.span_id
    assert handled.parent_id == publish.span_id

    # The ask: request -> ask -> publish -> handling -> the reply's publish, back to the gateway.
    ask = receiver.trace(ASK_TRACE)
    request = one(ask, "gw", "SERVER", "POST /agents/{agent_id}/message")
    asking = one(ask, "gw", "CLIENT", f"ask agent:echo-{node}-0")
    publish = one(ask, "gw", "PRODUCER", f"publish agent:echo-{node}-0")
    handled = one(ask, "w", "CONSUMER", "handle ping")
    replied = [s for s in ask if s.service == "w" and s.kind == "PRODUCER"]
    assert request.parent_id == CALLER
    assert asking.parent_id == request.span_id
    assert publish.parent_id == asking.span_id
    assert handled.parent_id == publish.span_id
    assert [s.parent_id for s in replied] == [handled.span_id]
    assert replied[0].name.startswith("publish reply:")
