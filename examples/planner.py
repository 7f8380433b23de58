"""A planner run: a goal becomes a plan of capability steps, run by other agents.

The rule planner (no model needed) turns a `brief` goal into three steps: summarize the text,
and compute two expressions. The steps do not depend on each other, so they are asked at once,
each of whichever agent offers its capability; their answers come back as the task's result,
with the plan. A step may use earlier steps' answers: the second goal's last step multiplies
the values of the first two (`${<step>.<field>}`, once they answered: `depends_on`).
"""

import json

import anyio

from mas import Message, Runtime, Settings
from mas.agents import CalcAgent, PlannerAgent, SummarizeAgent
from mas.observability import configure_logging

TEXT = (
    "Tides rise and fall twice a day. Cats sleep most of the day. The moon pulls the oceans "
    "and makes the tides. Without the moon, tides would be much smaller."
)


async def main() -> None:
    configure_logging("ERROR")
    async with Runtime(Settings()) as rt:
        await rt.spawn(PlannerAgent, id="planner")
        await rt.spawn(SummarizeAgent, id="summarize")
        for i in range(2):
            await rt.spawn(CalcAgent, id=f"calc-{i}")

        brief = {"kind": "brief", "text": TEXT, "expressions": ["365 * 2", "24 * 60"]}
        reply = await rt.ask("agent:planner", Message("goal", brief), timeout=30)
        print(
            "plan:",
            ", ".join(f"{s['id']} ({s['capability']})" for s in reply.payload["plan"]["steps"]),
        )
        for step, answer in reply.payload["steps"].items():
            print(f"{step}: {json.dumps(answer, sort_keys=True)}")

        chained = {
            "steps": [
                {"id": "days", "capability": "calc", "input": {"expression": "365 * 2"}},
                {"id": "minutes", "capability": "calc", "input": {"expression": "24 * 60"}},
                {
                    "id": "product",
                    "capability": "calc",
                    "input": {"expression": "${days.value} * ${minutes.value}"},
                    "depends_on": ["days", "minutes"],
                },
            ]
        }
        reply = await rt.ask("agent:planner", Message("goal", chained), timeout=30)
        print("chained result:", json.dumps(reply.payload["result"], sort_keys=True))


if __name__ == "__main__":
    anyio.run(main)
