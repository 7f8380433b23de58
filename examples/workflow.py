"""A fan-out/fan-in workflow with durable steps: a report agent splits a goal into topics,
asks a researcher per topic by capability (concurrently), and merges the drafts. Its first
run crashes after the research; the retry gets every finished step back from the record, so
no topic is researched twice and the goal is split once.

With `Settings(persist=True)` the record is in the database, and another process finishes
what a crashed one began the same way.
"""

import anyio

from mas import Agent, Message, Runtime, Settings
from mas.config import RetrySettings
from mas.observability import configure_logging

calls = {"split": 0, "research": 0}


class Researcher(Agent):
    type = "researcher"
    capabilities = ("research",)

    async def handle_message(self, message: Message) -> Message:
        calls["research"] += 1  # think of a paid model call
        return message.reply({"draft": f"notes on {message.payload['topic']}"})


def split(goal: str) -> list[str]:
    calls["split"] += 1
    return goal.split(", ")


class Report(Agent):
    type = "report"
    crashed = False

    async def handle_message(self, message: Message) -> Message:
        ctx = self.ctx
        topics = await ctx.step("split", split, message.payload["goal"])
        drafts = await ctx.gather(
            *[
                ctx.ask("capability:research", Message("research", {"topic": t}), timeout=30)
                for t in topics
            ]
        )
        if not Report.crashed:
            Report.crashed = True
            raise RuntimeError("the worker died here")  # the retry resumes after the asks
        return message.reply({"report": [d.payload["draft"] for d in drafts]})


async def main() -> None:
    configure_logging("ERROR")  # the crash below is the point: keep its warning quiet
    settings = Settings(retry=RetrySettings(max_attempts=3, base_delay=0.01))
    async with Runtime(settings) as rt:
        for i in range(3):
            await rt.spawn(Researcher, id=f"researcher-{i}")
        await rt.spawn(Report, id="report")
        goal = Message("report", {"goal": "tides, moons, orbits"})
        reply = await rt.ask("agent:report", goal, timeout=30)
    for line in reply.payload["report"]:
        print(line)
    print(f"split {calls['split']} time(s), {calls['research']} research call(s)")


if __name__ == "__main__":
    anyio.run(main)
