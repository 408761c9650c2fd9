"""The one browser-test set-up shared by the web apps' tests (the serve demo, the annotation app).

* ``browser``: a session-wide headless Chromium driven by Selenium (``/usr/bin/chromium`` +
  ``/usr/bin/chromedriver``, or ``$ACFD_CHROMIUM`` / ``$ACFD_CHROMEDRIVER``), with a fresh temporary
  profile. Tests that use it skip, with the reason, only when Chromium or chromedriver (or the
  ``selenium`` package) is not installed.
* ``live_server``: a factory fixture; ``base_url = live_server(app)`` serves an ASGI app with uvicorn
  on a free ``127.0.0.1`` port in a background thread and stops it when the test ends.
  :func:`serve_asgi` is the same as a context manager for code outside pytest (benchmarks).

Imported by ``tests/conftest.py``, so any test module can ask for these fixtures.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("ACFD_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("ACFD_CHROMEDRIVER", "/usr/bin/chromedriver"))
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)
SERVER_START_TIMEOUT_S = 60.0


def _missing_browser_reason() -> str | None:
    for path, what, package in (
        (CHROMIUM, "Chromium", "chromium"),
        (CHROMEDRIVER, "chromedriver", "chromium-driver"),
    ):
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"{what} not found at {path} (Debian: apt-get install -y {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium ``selenium.webdriver.Chrome`` shared by the whole session.

    Tests should navigate with ``browser.get(url)`` and not rely on state left by other tests
    (cookies and local storage belong to each test's own origin, i.e. its own live server port).
    """
    reason = _missing_browser_reason()
    if reason is not None:
        pytest.skip(reason)
    profile = tempfile.mkdtemp(prefix="acfd-chromium-")
    driver = start_chromium(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def start_chromium(profile: str) -> Any:
    """A headless Chromium WebDriver with the project's flags and its own profile folder (also used
    by ``tools/screenshot_serve_demo.py``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


@contextlib.contextmanager
def serve_asgi(app: Any, log_level: str = "warning") -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a daemon thread.

    The listening socket is bound before the server starts (port 0 = a free one), so there is no
    race for the port. Yields the base URL (``http://127.0.0.1:PORT``); on exit the server is
    asked to stop and the thread joined.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        if errors or not thread.is_alive():
            sock.close()
            raise RuntimeError(f"the test server did not start: {errors[0] if errors else 'thread exited'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the test server did not start within {SERVER_START_TIMEOUT_S:.0f} s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def live_server() -> Iterator[Callable[..., str]]:
    """A factory: ``base_url = live_server(app)`` serves an ASGI app until the test ends."""
    with contextlib.ExitStack() as stack:

        def start(app: Any, **kwargs: Any) -> str:
            return stack.enter_context(serve_asgi(app, **kwargs))

        yield start


__all__ = ["CHROMIUM", "CHROMEDRIVER", "CHROMIUM_FLAGS", "browser", "live_server", "serve_asgi", "start_chromium"]
