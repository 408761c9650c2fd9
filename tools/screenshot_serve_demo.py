"""Screenshot of the ``acfd serve`` demo page with the shipped model, for docs/images/serve_demo.png.

    python tools/screenshot_serve_demo.py [IMAGE] [-o docs/images/serve_demo.png]

Starts ``acfd serve`` on a free loopback port, opens the page in headless Chromium (Selenium, the
same browser set-up as the tests: Debian's ``chromium`` + ``chromium-driver``), uploads IMAGE (a
sample by default), waits for the faces and saves the window.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from browser_fixtures import start_chromium  # noqa: E402  (one browser set-up for tests and tools)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", default=str(ROOT / "samples" / "personai_icartoonface_dettrain_00330.jpg"))
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "images" / "serve_demo.png"))
    args = parser.parse_args()

    from selenium.webdriver.support.ui import WebDriverWait

    port = _free_port()
    acfd = Path(sys.executable).with_name("acfd")
    server = subprocess.Popen([str(acfd), "serve", "--port", str(port), "--log-level", "warning"])
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # the model loads (and its ONNX file is exported once) before it listens
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise SystemExit("acfd serve did not start")
        driver = start_chromium(tempfile.mkdtemp(prefix="acfd-shot-"))
        try:
            driver.get(base + "/")
            driver.find_element("id", "file-input").send_keys(str(Path(args.image).resolve()))
            WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.acfdDemo.state.result !== null;"))
            time.sleep(0.5)
            tmp = Path(args.output).with_suffix(".tmp.png")
            driver.save_screenshot(str(tmp))
            os.replace(tmp, args.output)
            print(f"{args.output}: {driver.find_element('id', 'face-count').text} faces shown")
        finally:
            driver.quit()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
