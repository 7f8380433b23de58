"""The `mas` command line; each command lives in its own module of this package."""

from __future__ import annotations

import typer

from mas.cli import api, db, dead_letters, demo, replay, send, token, up, worker

app = typer.Typer(
    help="mas: a multi-agent system runtime — supervised actors with mailboxes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich tables label every flag (and --help) `<bool>`.
    rich_markup_mode=None,
)


@app.callback()
def main() -> None:
    """Run `mas COMMAND --help` for the options of a command."""


@app.command()
def version() -> None:
    """Print the installed mas version."""
    from mas import __version__

    typer.echo(__version__)


app.command()(up.up)
app.command()(api.api)
app.command()(worker.worker)
app.command()(send.send)
app.command()(demo.demo)
app.command()(replay.replay)
app.add_typer(db.app, name="db")
app.add_typer(dead_letters.app, name="dead-letters")
app.add_typer(token.app, name="token")

__all__ = ["app"]
