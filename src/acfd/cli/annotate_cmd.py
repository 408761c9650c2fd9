"""``acfd annotate PROJECT_DIR``: the question-and-answer web app of an assembling project."""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
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


#: Connections the server serves at once (more get 503); idle keep-alive connections close after
#: :data:`KEEP_ALIVE_S` seconds.
MAX_CONNECTIONS = 64
KEEP_ALIVE_S = 5


def local_addresses() -> list[str]:
    """This machine's IPv4 addresses that other machines may reach, best guess first (the one of the
    default route, then those of the host name), without sending anything."""
    found: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: a UDP "connect" only picks the outgoing interface
        found.append(s.getsockname()[0])
    with contextlib.suppress(OSError):
        found += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    out = []
    for addr in found:
        ip = ipaddress.ip_address(addr)
        if not (ip.is_loopback or ip.is_unspecified or ip.is_link_local) and addr not in out:
            out.append(addr)
    return out


def open_urls(host: str, port: int, token: str | None) -> list[str]:
    """The URLs to open for a server bound to ``host``: for a wildcard address (``0.0.0.0``, ``::``)
    the machine's reachable addresses and loopback, else ``host`` itself."""
    if host in ("0.0.0.0", "::", ""):
        hosts = [*local_addresses(), "127.0.0.1"]
    else:
        hosts = [host]
    query = f"?token={token}" if token else ""
    return [f"http://{f'[{h}]' if ':' in h else h}:{port}/{query}" for h in hosts]


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
    shows answered / remaining per identity and renames or merges names. Answers go to
    PROJECT_DIR/project.db at once; several people (browser tabs) can answer together.
    """
    import uvicorn

    from acfd.annotate.app import create_app

    if not is_loopback(host) and token is None:
        token = secrets.token_urlsafe(24)
    if token is not None and len(token) < 16:
        fail("--token must have at least 16 characters", 2)
    app = create_app(project_dir, token=token)
    urls = open_urls(host, port, token)
    typer.echo(f"annotating {project_dir}: open {' or '.join(urls)}  (Ctrl-C to stop; every answer is saved at once)")
    uvicorn.run(app, host=host, port=port, log_level="warning", limit_concurrency=MAX_CONNECTIONS,
                timeout_keep_alive=KEEP_ALIVE_S)


def register(app: typer.Typer) -> None:
    """Add the ``annotate`` command to ``app``."""
    app.command("annotate")(annotate)
