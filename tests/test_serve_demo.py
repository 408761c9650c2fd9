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


def _open_demo(browser, base: str) -> None:
    browser.get(base + "/")
    _wait(browser, "document.getElementById('model-name').textContent.includes('fixed')")


def test_download_is_named_after_the_image(browser, live_server, samples_dir):
    _open_demo(browser, live_server(create_app(lambda s: FixedDetector(), ServeSettings())))
    _upload(browser, samples_dir / SAMPLE)
    _wait(browser, "window.acfdDemo.state.result !== null")
    download = browser.find_element("id", "download")
    assert download.get_attribute("download") == SAMPLE.rsplit(".", 1)[0] + ".faces.json"
    assert download.get_attribute("aria-disabled") == "false"


def test_a_failed_upload_clears_the_previous_image_and_faces(browser, live_server, samples_dir, tmp_path):
    _open_demo(browser, live_server(create_app(lambda s: FixedDetector(), ServeSettings())))
    _upload(browser, samples_dir / SAMPLE)
    _wait(browser, "window.acfdDemo.state.result !== null")
    assert browser.find_element("id", "face-count").text == "1"
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    _upload(browser, bad)
    _wait(browser, "!document.getElementById('error').hidden")
    assert browser.find_element("id", "face-count").text == "0"
    assert browser.find_elements("css selector", "#face-list li") == []
    assert browser.execute_script("return document.getElementById('canvas').hidden") is True
    assert browser.find_element("id", "download").get_attribute("aria-disabled") == "true"
    assert browser.execute_script("return window.acfdDemo.state.result") is None
    browser.save_screenshot("/tmp/serve_demo_failed_upload.png")


def test_the_file_picker_opens_from_the_keyboard(browser, live_server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    _open_demo(browser, live_server(create_app(lambda s: FixedDetector(), ServeSettings())))
    # the file dialog cannot show in a headless browser: record that the input was asked to open
    browser.execute_script(
        "window.pickerOpened = false;"
        "document.getElementById('file-input').addEventListener('click', (e) => {"
        "  window.pickerOpened = true; e.preventDefault(); });"
    )
    focused = []
    for _ in range(6):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        focused.append(browser.execute_script("return document.activeElement.id"))
        if focused[-1] == "choose-file":
            break
    assert focused[-1] == "choose-file", focused
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    _wait(browser, "window.pickerOpened === true", 5)


def test_a_narrow_window_shows_the_image_full_width_without_overflow(browser, live_server, samples_dir):
    base = live_server(create_app(lambda s: FixedDetector(), ServeSettings()))
    size = browser.get_window_size()
    try:
        browser.set_window_size(420, 900)
        _open_demo(browser, base)
        _upload(browser, samples_dir / SAMPLE)
        _wait(browser, "window.acfdDemo.state.result !== null")
        inner, scroll, canvas_w = browser.execute_script(
            "return [window.innerWidth, document.documentElement.scrollWidth,"
            " document.getElementById('canvas').getBoundingClientRect().width];"
        )
        browser.save_screenshot("/tmp/serve_demo_420.png")
    finally:
        browser.set_window_size(size["width"], size["height"])
    assert scroll <= inner, (scroll, inner)  # nothing wider than the window
    assert canvas_w >= inner - 60, (canvas_w, inner)  # the image spans the window, not a thumbnail


def test_api_docs_work_offline(browser, live_server, monkeypatch):
    from acfd.serve.routers import pages

    assert pages.swagger_ui_dir() is not None, "fastapi-offline ships the Swagger UI files"
    base = live_server(create_app(lambda s: FixedDetector(), ServeSettings()))
    browser.get(base + "/docs")
    _wait(browser, "document.querySelector('.swagger-ui .info .title') !== null")
    assert "acfd detection service" in browser.find_element("css selector", ".swagger-ui .info .title").text
    assert browser.find_elements("css selector", ".opblock-summary-path[data-path='/v1/detect']")
    scripts = browser.execute_script("return Array.from(document.scripts).map((s) => s.src).filter(Boolean)")
    assert scripts and all(src.startswith(base) for src in scripts), scripts
    browser.save_screenshot("/tmp/serve_docs.png")
    # without the files: the page and /docs say so instead of loading them from the internet
    monkeypatch.setattr(pages, "swagger_ui_dir", lambda: None)
    bare = live_server(create_app(lambda s: FixedDetector(), ServeSettings()))
    browser.get(bare + "/")
    assert "not installed" in browser.find_element("id", "docs-note").text
    browser.get(bare + "/docs")
    assert "fastapi-offline" in browser.find_element("id", "no-docs").text
