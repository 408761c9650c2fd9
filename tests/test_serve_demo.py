"""The demo page of ``acfd serve`` in headless Chromium (Selenium): upload, boxes, slider, JSON, errors."""

from __future__ import annotations

import json

import pytest
from test_serve import SAMPLE, FixedDetector

from acfd.serve import ServeSettings, create_app

pytest.importorskip("selenium")


def _wait(browser, condition: str, timeout: float = 20.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(lambda d: d.execute_script(f"return {condition};"))


def _upload(browser, path) -> None:
    browser.find_element("id", "file-input").send_keys(str(path))


def _set_threshold(browser, value: float) -> None:
    browser.execute_script(
        "const s = document.getElementById('threshold'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input'));",
        str(value),
    )


def test_demo_page_draws_faces_filters_and_downloads(browser, live_server, samples_dir, tmp_path):
    base = live_server(create_app(lambda s: FixedDetector(), ServeSettings(score_thr=0.5)))
    browser.get(base + "/")
    _wait(browser, "document.getElementById('model-name').textContent.includes('fixed')")
    _upload(browser, samples_dir / SAMPLE)
    _wait(browser, "window.acfdDemo.state.result !== null")
    text = lambda el: browser.find_element("id", el).text  # noqa: E731
    assert text("face-count") == "1"  # default threshold 0.5: the 0.9 face only
    assert "848x472" in text("status")
    # the box is drawn: FixedDetector's first box starts at (0.1 w, 0.1 h) = (84.8, 47.2); its edge is red
    r, g, b = browser.execute_script(
        "const c = document.getElementById('canvas');"
        "return Array.from(c.getContext('2d').getImageData(150, 47, 1, 1).data.slice(0, 3));"
    )
    assert r > 200 and g < 60, (r, g, b)
    _set_threshold(browser, 0.2)
    assert text("face-count") == "2" and text("threshold-value") == "0.20"
    assert len(browser.find_elements("css selector", "#face-list li")) == 2
    downloaded = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(document.getElementById('download').href).then(r => r.text()).then(done);"
    )
    body = json.loads(downloaded)
    assert [f["score"] for f in body["faces"]] == [0.9, 0.3] and body["image_size"] == [848, 472]
    assert body["score_thr"] == 0.2
    browser.save_screenshot(str(tmp_path / "demo.png"))
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def test_demo_page_shows_a_bad_upload_error(browser, live_server, tmp_path):
    base = live_server(create_app(lambda s: FixedDetector(), ServeSettings()))
    browser.get(base + "/")
    _wait(browser, "document.getElementById('model-name').textContent.includes('fixed')")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    _upload(browser, bad)
    _wait(browser, "!document.getElementById('error').hidden")
    error = browser.find_element("id", "error").text
    assert error.startswith("415") and "not an image" in error
    assert "broken.png: failed" in browser.find_element("id", "status").text
