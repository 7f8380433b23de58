"""`mas send TYPE PAYLOAD`: submit a task over HTTP and print its result."""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mas.cli.gateway_client import TokenOption, UrlOption, connection, fail

if TYPE_CHECKING:
    from pydantic import ValidationError

MAX_WAIT = 3600.0
"""The longest `--wait` this command takes."""
WAIT_STEP = 10.0
"""Seconds one request waits at most: a gateway refuses `?wait=` over MAS_API__MAX_WAIT
(60 s by default), so a longer `--wait` is several requests."""

# What each field of a task is, in the words of the option that sets it.
_FIELDS = {
    "type": (
        "--type/TYPE",
        "an agent type",
        "letters, digits, '_', '.' and '-', starting with a letter or '_'",
    ),
    "agent": (
        "--agent",
        "an agent id",
        "letters, digits, '_', '.', ':', '@' and '-', starting with a letter, a digit or '_'",
    ),
}


def _usage(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _target(
    first: str | None, second: str | None, agent_type: str | None, agent: str | None
) -> tuple[dict[str, str], str]:
    """The task's destination (`{"type": ...}` or `{"agent": ...}`) and the PAYLOAD text.

    `mas send echo '{...}'` names the type by position; with `--type` or `--agent` the one
    positional argument is the payload.
    """
    if agent_type is not None or agent is not None:
        if second is not None:
            raise _usage(
                "with --type or --agent the only argument is the PAYLOAD; "
                f"got two: {first!r} and {second!r}"
            )
        if first is not None and _looks_like_a_name(first):
            raise _usage(
                "name exactly one target: an agent type (TYPE or --type NAME) or an agent "
                f"id (--agent ID); got TYPE {first!r} too"
            )
        payload = first
    else:
        agent_type, payload = first, second
    named = {k: v for k, v in (("type", agent_type), ("agent", agent)) if v is not None}
    if len(named) != 1:
        raise _usage(
            "name exactly one target: an agent type (TYPE or --type NAME) or an agent id "
            f"(--agent ID); got {' and '.join(named) or 'neither'}"
        )
    return named, "{}" if payload is None else payload


def _looks_like_a_name(text: str) -> bool:
    """Whether a lone argument beside --type/--agent is a TYPE by mistake, not a PAYLOAD."""
    if text.lstrip().startswith("{"):
        return False
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return True
    return False


def _sentence(exc: ValidationError) -> str:
    """A task's validation error as the user would say it: the option and what it takes."""
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else "task"
    value = error.get("input")
    if field in _FIELDS:
        option, what, alphabet = _FIELDS[field]
        if error["type"] == "string_pattern_mismatch":  # pydantic's message is the regex
            return f"{option} {value!r} is not {what}: use {alphabet}"
        return f"{option} {value!r} is not {what}: {error['msg'].lower()}"
    if field == "payload":
        return f"PAYLOAD cannot be sent: {error['msg']}"
    return f"the task is invalid: {error['msg']}"


def send(
    first: Annotated[
        str | None,
        typer.Argument(
            metavar="TYPE",
            help="agent type to send the task to (or name it with --type or --agent)",
            show_default=False,
        ),
    ] = None,
    second: Annotated[
        str | None,
        typer.Argument(
            metavar="PAYLOAD", help="the task, a JSON object (default: {})", show_default=False
        ),
    ] = None,
    agent_type: Annotated[
        str | None, typer.Option("--type", metavar="NAME", help="agent type (instead of TYPE)")
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option("--agent", metavar="ID", help="one agent's id, instead of a type"),
    ] = None,
    wait: Annotated[
        float,
        typer.Option(metavar="SECONDS", help=f"seconds to wait for the result (0-{MAX_WAIT:.0f})"),
    ] = 30.0,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Submit a task to an agent type (or one agent) through the gateway; print the result.

    Every argument is checked before the first request, so a mistake never leaves a task
    behind.
    """
    import httpx
    from pydantic import ValidationError

    from mas.api.schemas import TaskIn

    if not (math.isfinite(wait) and 0 <= wait <= MAX_WAIT):
        raise _usage(f"--wait {wait} is not a number of seconds from 0 to {MAX_WAIT:.0f}")
    destination, payload = _target(first, second, agent_type, agent)
    try:
        body: Any = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise _usage(f"PAYLOAD is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _usage('PAYLOAD must be a JSON object, like \'{"text": "hi"}\'')
    try:
        TaskIn.model_validate({**destination, "payload": body})  # as the gateway will
    except ValidationError as exc:
        raise _usage(_sentence(exc)) from None
    base, bearer = connection(url, token)
    headers = {"Authorization": f"Bearer {bearer}"}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=WAIT_STEP + 10) as client:
            created = client.post("/tasks/", json={**destination, "payload": body})
            if created.status_code >= 400:
                fail(created)
            task_id = created.json()["id"]
            finished = _wait_for(client, task_id, wait)
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach the gateway at {base}: {exc}", err=True)
        raise typer.Exit(1) from None
    result = finished.json()
    typer.echo(json.dumps(result, indent=2))
    if result["status"] != "succeeded":
        raise typer.Exit(1)


def _wait_for(client: Any, task_id: str, wait: float) -> Any:
    """The task once it ended, or as it is after `wait` seconds: asked in steps of at most
    `WAIT_STEP` seconds, as a gateway refuses a longer `?wait=` than MAS_API__MAX_WAIT."""
    deadline = time.monotonic() + wait
    while True:
        step = max(0.0, min(WAIT_STEP, deadline - time.monotonic()))
        response = client.get(f"/tasks/{task_id}", params={"wait": round(step, 3)})
        if response.status_code >= 400:
            fail(response)
        if response.json()["status"] not in ("pending", "running") or step < WAIT_STEP:
            return response
