"""A pipeline under a rest_for_one supervisor: when the parser crashes, the stage after it
restarts too, and a message that keeps failing ends up in the dead-letter stream."""

import anyio

from mas import Agent, HandlerError, HandlerResult, Message, Runtime, Settings
from mas.config import RetrySettings
from mas.observability import configure_logging


class Parser(Agent):
    type = "parser"

    async def handle_message(self, message: Message) -> HandlerResult:
        text = message.payload["text"]
        if not text.isdigit():
            raise ValueError(f"not a number: {text!r}")
        return message.reply({"value": int(text)})


class Totals(Agent):
    type = "totals"

    async def start(self) -> None:
        self.total = 0  # state is rebuilt by start() on every restart

    async def handle_message(self, message: Message) -> HandlerResult:
        self.total += message.payload["value"]
        return message.reply({"total": self.total})


async def main() -> None:
    configure_logging("ERROR")  # the crashes below are the point: keep their warnings quiet
    settings = Settings(retry=RetrySettings(max_attempts=2, base_delay=0.01))
    async with Runtime(settings) as rt:
        pipeline = await rt.spawn_supervisor("pipeline", strategy="rest_for_one")
        parser = await pipeline.spawn(Parser, id="parser")
        totals = await pipeline.spawn(Totals, id="totals")

        for text in ("1", "2"):
            parsed = await parser.ask(Message("parse", {"text": text}), timeout=1)
            summed = await totals.ask(Message("add", parsed.payload), timeout=1)
        print("total before the crash:", summed.payload["total"])

        async with rt.dead_letters.subscribe() as letters:
            try:
                await parser.ask(Message("parse", {"text": "three"}), timeout=1)
            except HandlerError as exc:
                print("parse failed:", exc)
            letter = await letters.get()
        print("dead letter:", letter.reason, "after", letter.attempts, "attempts")

        summed = await totals.ask(Message("add", {"value": 0}), timeout=1)
        print("total after the restart:", summed.payload["total"])  # 0: totals restarted too


if __name__ == "__main__":
    anyio.run(main)
