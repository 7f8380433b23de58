"""A language model plans a goal; agents run the plan, one of them asking the model too.

Point it at any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, a gateway):

    export MAS_LLM__BASE_URL=https://api.openai.com/v1   # or http://localhost:11434/v1
    export MAS_LLM__API_KEY=sk-...                        # not needed by a local server
    export MAS_LLM__MODEL=gpt-4o-mini                     # or llama3.1, qwen2.5, ...
    uv run python examples/llm_planner.py

The planner tells the model which capabilities the agents here offer (`calc`, `summarize`,
`write`) and runs the plan it answers. `Poet` offers `write` by asking the model itself: a
durable step, recorded with its tokens, so a retry after a crash would not pay for it again.
The model's plan is what it is: the output varies with the model.
"""

import json
import os
import sys

import anyio

from mas import HandlerResult, MasError, Message, Runtime, Settings
from mas.agents import CalcAgent, ModelAgent, PlannerAgent, SummarizeAgent
from mas.observability import configure_logging

GOAL = "How many minutes are there in two years? Then write one line of verse about that number."


class Poet(ModelAgent):
    """Offers `write`: a line of verse about what it is given, by the model (`self.model`)."""

    type = "poet"
    capabilities = ("write",)

    async def handle_message(self, message: Message) -> HandlerResult:
        topic = json.dumps(message.payload, ensure_ascii=False)
        prompt = [{"role": "user", "content": f"Write one line of verse about: {topic}"}]
        answer = await self.model.complete(self.ctx, prompt, temperature=0.7)
        return message.reply({"line": answer.content.strip()})


async def main() -> None:
    configure_logging("ERROR")
    settings = Settings()
    async with Runtime(settings) as rt:
        await rt.spawn(PlannerAgent, id="planner")
        await rt.spawn(CalcAgent, id="calc")
        await rt.spawn(SummarizeAgent, id="summarize")
        await rt.spawn(Poet, id="poet")
        try:
            reply = await rt.ask("agent:planner", Message("goal", {"goal": GOAL}), timeout=300)
        except MasError as exc:  # no valid plan, a step that failed, a model that is down
            raise SystemExit(f"the goal failed: {exc}") from None
    outcome = reply.payload
    print("plan:", ", ".join(f"{s['id']} ({s['capability']})" for s in outcome["plan"]["steps"]))
    for step, answer in outcome["steps"].items():
        print(f"{step}: {json.dumps(answer, sort_keys=True, ensure_ascii=False)}")
    usage = outcome["usage"]
    print(f"planning: {usage.get('calls', 0)} model call(s), {usage.get('total_tokens', 0)} tokens")


if __name__ == "__main__":
    if not os.environ.get("MAS_LLM__BASE_URL"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        raise SystemExit("set MAS_LLM__BASE_URL first")
    anyio.run(main)
