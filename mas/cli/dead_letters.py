"""`mas dead-letters ls | show | replay | discard`: the cluster's dead letters, through a
gateway (the same routes, scopes and checks as the API and the dashboard)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from mas.cli.gateway_client import TokenOption, UrlOption, connection, fail

if TYPE_CHECKING:
    import httpx

app = typer.Typer(
    help="Dead letters of the whole cluster: list, show, replay to their address, discard.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

LetterId = Annotated[str, typer.Argument(metavar="ID", help="the dead letter's id")]


@contextmanager
def _client(url: str | None, token: str | None) -> Iterator[httpx.Client]:
    import httpx

    base, bearer = connection(url, token)
    try:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {bearer}"}, timeout=30
        ) as client:
            yield client
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach the gateway at {base}: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("ls")
def list_letters(
    status: Annotated[
        Literal["dead", "replayed", "discarded", "all"],
        typer.Option(
            metavar="STATUS",
            help="which letters: dead (not settled yet), replayed, discarded, or all",
        ),
    ] = "dead",
    reason: Annotated[
        str | None, typer.Option(metavar="REASON", help="e.g. max_attempts, unroutable")
    ] = None,
    agent: Annotated[
        str | None, typer.Option(metavar="ID", help="the agent whose handler gave up")
    ] = None,
    target: Annotated[
        str | None, typer.Option(metavar="ADDRESS", help="the address, e.g. type:echo")
    ] = None,
    task: Annotated[str | None, typer.Option(metavar="ID", help="a task's letters")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=500, metavar="N", help="at most this many (1-500)")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="print the letters as JSON")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List dead letters, newest first: id, when, why, where they were going, the error."""
    params: dict[str, Any] = {
        "status": None if status == "all" else status,
        "reason": reason,
        "agent_id": agent,
        "target": target,
        "task_id": task,
        "limit": limit,
    }
    with _client(url, token) as client:
        response = client.get(
            "/dead-letters/", params={k: v for k, v in params.items() if v is not None}
        )
    if response.status_code >= 400:
        fail(response)
    letters = response.json()["items"]
    if as_json:
        typer.echo(json.dumps(letters, indent=2))
        return
    if not letters:
        typer.echo("no dead letters" + ("" if status == "all" else f" ({status})"), err=True)
        return
    for letter in letters:
        error = letter["error"] or {}
        why = f"{error.get('type')}: {error.get('message')}" if error else ""
        typer.echo(
            f"{letter['id']}  {letter['created_at'][:19]}  {letter['status']:<9}  "
            f"{letter['reason']:<14}  {letter['target']}  {letter['message_type']}  "
            f"x{letter['attempts']}  {why[:100]}"
        )


@app.command("show")
def show(
    letter_id: LetterId,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Print one dead letter as JSON, its message included."""
    with _client(url, token) as client:
        response = client.get(f"/dead-letters/{letter_id}")
    if response.status_code >= 400:
        fail(response)
    typer.echo(json.dumps(response.json(), indent=2))


@app.command("replay")
def replay(letter_id: LetterId, url: UrlOption = None, token: TokenOption = None) -> None:
    """Send a copy of the letter's message to its original address (a letter replayed
    before is not sent again: its first copy is named)."""
    response = _settle(letter_id, "replay", url, token)
    typer.echo(f"{letter_id}: replayed as {response['replayed_as']}")


@app.command("discard")
def discard(letter_id: LetterId, url: UrlOption = None, token: TokenOption = None) -> None:
    """Mark the letter discarded: kept as a record, never replayed."""
    _settle(letter_id, "discard", url, token)
    typer.echo(f"{letter_id}: discarded")


def _settle(letter_id: str, action: str, url: str | None, token: str | None) -> Any:
    with _client(url, token) as client:
        response = client.post(f"/dead-letters/{letter_id}/{action}")
    if response.status_code >= 400:
        fail(response)
    return response.json()
