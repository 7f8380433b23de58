"""`mas send TYPE PAYLOAD`: submit a task over HTTP and print its result."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from mas.cli.up import TOKEN_FILE, URL_FILE


def _connection(url: str | None, token: str | None) -> tuple[str, str]:
    saved_url = URL_FILE.read_text().strip() if URL_FILE.exists() else None
    # The token is the file's last line (files of older versions have the URL first).
    saved = TOKEN_FILE.read_text().split() if TOKEN_FILE.exists() else []
    saved_token = saved[-1] if saved else None
    chosen_url = url or os.environ.get("MAS_URL") or saved_url or "http://127.0.0.1:8000"
    chosen_token = token or os.environ.get("MAS_TOKEN") or saved_token
    if not chosen_token:
        typer.echo(
            "error: no token: pass --token, set MAS_TOKEN, or run `mas up` here first", err=True
        )
        raise typer.Exit(2)
    return chosen_url.rstrip("/"), chosen_token


def send(
    agent_type: Annotated[str, typer.Argument(help="agent type to send the task to")],
    payload: Annotated[str, typer.Argument(help="JSON object")] = "{}",
    wait: Annotated[float, typer.Option(help="seconds to wait for the result")] = 30.0,
    url: Annotated[
        str | None, typer.Option(help="gateway URL (default: MAS_URL or mas up)")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="bearer token (default: MAS_TOKEN or mas up)")
    ] = None,
) -> None:
    """Submit a task to an agent type through the gateway and print the finished task."""
    import httpx

    try:
        body: Any = json.loads(payload)
    except json.JSONDecodeError as exc:
        typer.echo(f"error: PAYLOAD is not JSON: {exc}", err=True)
        raise typer.Exit(2) from None
    if not isinstance(body, dict):
        typer.echo('error: PAYLOAD must be a JSON object, like \'{"text": "hi"}\'', err=True)
        raise typer.Exit(2)
    base, bearer = _connection(url, token)
    headers = {"Authorization": f"Bearer {bearer}"}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=wait + 10) as client:
            created = client.post("/tasks/", json={"type": agent_type, "payload": body})
            if created.status_code >= 400:
                _fail(created)
            task_id = created.json()["id"]
            finished = client.get(f"/tasks/{task_id}", params={"wait": wait})
            if finished.status_code >= 400:
                _fail(finished)
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach the gateway at {base}: {exc}", err=True)
        raise typer.Exit(1) from None
    task = finished.json()
    typer.echo(json.dumps(task, indent=2))
    if task["status"] != "succeeded":
        raise typer.Exit(1)


def _fail(response: Any) -> None:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    typer.echo(f"error: HTTP {response.status_code}: {detail}", err=True)
    raise typer.Exit(1)
