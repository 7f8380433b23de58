"""A task that waits for a person, through the gateway's HTTP API (served in this process).

An expense agent checks a claim (a durable step), waits out a cooling-off period (a durable
timer) and then waits for a manager's decision (a signal, up to a day). While it waits the
handler is parked: its agent is free and nothing but a row in the database remembers it, so
a restart of every process changes nothing. The decision arrives as
`POST /tasks/{id}/signals/approve`, which wakes the workflow at once; the task's tree shows
the steps it took.

With `PYTHONPATH=. uv run mas up --agents examples.approval:Expense` running, the same
requests go to the URL it prints, with the dev token it saves.
"""

import tempfile
from datetime import timedelta
from typing import Any

import anyio
import httpx
from pydantic import SecretStr

from mas import Agent, HandlerResult, Message, Settings, TaskResult
from mas.api.app import create_app
from mas.api.auth import mint_token
from mas.config import AuthSettings, WorkflowSettings
from mas.observability import configure_logging

SECRET = "an example secret of at least thirty-two characters"


def check_policy(claim: dict[str, Any]) -> str:
    return "within policy" if claim["amount"] <= 500 else "needs a second look"


class Expense(Agent):
    type = "expense"

    async def handle_message(self, message: Message) -> HandlerResult:
        ctx = self.ctx
        verdict = await ctx.step("check", check_policy, message.payload)
        await ctx.sleep(timedelta(seconds=1))  # the cooling-off period: a durable timer
        decision = await ctx.signal("approve", timeout=timedelta(days=1))  # a person decides
        assert message.task_id is not None
        return TaskResult.succeeded(
            message.task_id, {"policy": verdict, "approved": decision["ok"], "by": decision["by"]}
        )


async def main() -> None:
    configure_logging("ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{tmp}/mas.db",
            persist=True,
            auth=AuthSettings(jwt_secret=SecretStr(SECRET)),
            workflow=WorkflowSettings(park_after=0.5),  # park waits longer than half a second
        )
        app = create_app(settings, start_agents=[Expense], agent_classes=[Expense])
        token = mint_token(SECRET, "ada", ["tasks:read", "tasks:write"], ttl=600)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://mas",
                headers={"Authorization": f"Bearer {token}"},
            ) as http,
        ):
            created = await http.post(
                "/tasks/", json={"type": "expense", "payload": {"amount": 120}}
            )
            task_id = created.json()["id"]

            # Wait until the workflow waits for the decision (its tree shows the signal step).
            while True:
                tree = (await http.get(f"/tasks/{task_id}/tree")).json()
                if [step["kind"] for step in tree["steps"]][-1:] == ["signal"]:
                    break
                await anyio.sleep(0.1)
            print(f"task {tree['task']['status']}, waiting for: approve")

            await http.post(f"/tasks/{task_id}/signals/approve", json={"ok": True, "by": "maria"})
            done = (await http.get(f"/tasks/{task_id}", params={"wait": 10})).json()
            print(f"task {done['status']}: {done['result']}")
            tree = (await http.get(f"/tasks/{task_id}/tree")).json()
            print("steps:", ", ".join(f"{s['kind']} {s['name']}" for s in tree["steps"]))


if __name__ == "__main__":
    anyio.run(main)
