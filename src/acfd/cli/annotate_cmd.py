"""``acfd annotate PROJECT_DIR``: the question-and-answer web app of an assembling project."""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path

import typer

from acfd.cli.errors import fail, one_line_errors


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@one_line_errors
def annotate(
    project_dir: Path = typer.Argument(..., help="A project folder made by 'acfd assemble'."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (another than loopback needs a token)."),
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="Port to listen on."),
    token: str | None = typer.Option(
        None, "--token", envvar="ACFD_ANNOTATE_TOKEN",
        help="Access token; made up and printed when binding a non-loopback address without one.",
    ),
) -> None:
    """Review the candidates in the browser: "Is this <name>?" Yes / No / Not a face / Skip.

    Keys: Y, N, F, S, U (undo). The Groups view names or rejects many crops at once; Progress
    shows answered / remaining per identity. Answers go to PROJECT_DIR/project.db at once.
    """
    import uvicorn

    from acfd.annotate.app import create_app

    if not is_loopback(host) and token is None:
        token = secrets.token_urlsafe(24)
    if token is not None and len(token) < 16:
        fail("--token must have at least 16 characters", 2)
    app = create_app(project_dir, token=token)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    typer.echo(f"annotating {project_dir}: open {url}  (Ctrl-C to stop; every answer is saved at once)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    """Add the ``annotate`` command to ``app``."""
    app.command("annotate")(annotate)
