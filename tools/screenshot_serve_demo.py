"""Screenshot of the ``acfd serve`` demo page with the shipped model, for docs/images/serve_demo.png.

    python tools/screenshot_serve_demo.py [IMAGE] [-o docs/images/serve_demo.png]

Serves the app as ``acfd serve`` does with no options (the shipped model, default settings) on a
free loopback port, opens the page in headless Chromium (Selenium), uploads IMAGE (a sample by
default), waits for the faces and saves the window. Server and browser come from the tests' own
set-up (``tests/browser_fixtures.py``: ``serve_asgi``, ``start_chromium``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from browser_fixtures import serve_asgi, start_chromium  # noqa: E402  (one set-up for tests and tools)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", default=str(ROOT / "samples" / "personai_icartoonface_dettrain_00330.jpg"))
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "images" / "serve_demo.png"))
    args = parser.parse_args()

    from selenium.webdriver.support.ui import WebDriverWait

    from acfd.serve import create_app

    with serve_asgi(create_app()) as base:  # returns once the model is loaded and the port listens
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


if __name__ == "__main__":
    main()
