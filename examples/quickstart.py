"""The quickstart from the README: spawn an agent and ask it something."""

import anyio

from mas import Agent, Message, Runtime
from mas.observability import configure_logging


class Greeter(Agent):
    type = "greeter"

    async def handle_message(self, message: Message) -> Message:
        return message.reply(payload={"text": f"hello {message.payload['name']}"})


async def main() -> None:
    configure_logging()  # mas's JSON log lines on stderr; the runtime leaves logging to you
    async with Runtime() as rt:  # memory transport unless configured otherwise
        ref = await rt.spawn(Greeter, id="g1")
        reply = await ref.ask(Message(type="greet", payload={"name": "ada"}), timeout=1)
        print(reply.payload["text"])


if __name__ == "__main__":
    anyio.run(main)
