"""The annotation app: its HTTP API (FastAPI TestClient) and the page in a real Chromium (Selenium)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from acfd.annotate.app import MAX_BODY_BYTES, create_app
from acfd.assemble import review
from acfd.assemble.project import Project
from acfd.cli.annotate_cmd import is_loopback

from test_assemble import _run, dataset  # noqa: F401 - the synthetic project fixture

REPO = Path(__file__).resolve().parents[1]
#: Without a token the app answers only requests addressed to a loopback name.
LOCAL = "http://127.0.0.1:8765"


@pytest.fixture
def project_dir(dataset: dict[str, Path]) -> Path:  # noqa: F811
    project, _ = _run(dataset)
    project.close()
    return dataset["project"]


def _answers(project_dir: Path) -> list[tuple]:
    conn = sqlite3.connect(project_dir / "project.db")
    try:
        return conn.execute(
            "SELECT a.face_id, a.answer, i.name, t.annotator, t.undone_at IS NOT NULL FROM answers a"
            " JOIN actions t ON t.id = a.action_id LEFT JOIN identities i ON i.id = a.identity_id ORDER BY a.id"
        ).fetchall()
    finally:
        conn.close()


def test_api_question_answer_undo(project_dir: Path) -> None:
    client = TestClient(create_app(project_dir), base_url=LOCAL)
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "http" not in page.text.split("<body>")[1]
    assert client.get("/static/app.js").status_code == 200
    q = client.get("/api/question", params={"annotator": "ann"}).json()
    assert q["done"] is False and q["name"] in ("Alice", "Bob") and q["references"]
    for url in (f"/crop/{q['face_id']}.jpg", f"/frame/{q['face_id']}.jpg", f"/reference/{q['references'][0]}.jpg"):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    r = client.post("/api/answer", json={"annotator": "ann", "face_ids": [q["face_id"]], "answer": "yes", "identity_id": q["identity_id"]})
    assert r.status_code == 200
    assert _answers(project_dir) == [(q["face_id"], "yes", q["name"], "ann", 0)]
    assert client.post("/api/undo", json={"annotator": "ann"}).json()["undone"]["face_ids"] == [q["face_id"]]
    assert _answers(project_dir)[0][-1] == 1
    groups = client.get("/api/groups").json()
    assert {g["kind"] for g in groups["groups"]} == {"candidate", "cluster"} and "Alice" in groups["identities"]
    prog = client.get("/api/progress").json()
    assert prog["representatives"] == 6 and prog["open_questions"] == 4


def test_api_rejects_bad_requests(project_dir: Path) -> None:
    client = TestClient(create_app(project_dir), base_url=LOCAL)
    bad = [
        {"annotator": "ann", "face_ids": [], "answer": "yes"},
        {"annotator": "ann", "face_ids": [1], "answer": "maybe"},
        {"annotator": "<script>", "face_ids": [1], "answer": "skip"},
        {"annotator": "ann", "face_ids": [123456], "answer": "skip"},
        {"annotator": "ann", "face_ids": [1], "answer": "yes"},  # no identity
        {"annotator": "ann", "face_ids": list(range(1000)), "answer": "skip"},
    ]
    for body in bad:
        assert client.post("/api/answer", json=body).status_code == 422, body
    big = b'{"annotator": "' + b"a" * (MAX_BODY_BYTES + 10) + b'"}'
    assert client.post("/api/undo", content=big, headers={"content-type": "application/json"}).status_code == 413
    # files only by integer id: no path from the request reaches the file system
    for url in ("/crop/..%2Fproject.db", "/crop/1.db", "/frame/abc.jpg", "/static/..%2F..%2Fapp.py", "/static/index.html",
                "/reference/999.jpg", "/crop/999999.jpg"):
        assert client.get(url).status_code in (404, 422), url
    assert _answers(project_dir) == []


def test_token_required_when_set(project_dir: Path) -> None:
    token = "s3cret-token-0123456789"
    client = TestClient(create_app(project_dir, token=token), base_url=LOCAL)
    assert client.get("/").status_code == 401
    assert client.get("/api/progress", headers={"X-ACFD-Token": "wrong"}).status_code == 401
    assert client.get("/api/progress", headers={"X-ACFD-Token": token}).status_code == 200
    first = client.get(f"/?token={token}")
    assert first.status_code == 200
    assert client.get("/api/progress").status_code == 200  # the cookie set by the first visit
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_annotate_cli_needs_a_project(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from acfd.cli import app

    result = CliRunner().invoke(app, ["annotate", str(tmp_path)])
    assert result.exit_code == 1 and "not an assembling project" in result.output


# ---- the page in Chromium --------------------------------------------------------------------------


def _wait(browser, condition, timeout: float = 30.0):  # noqa: ANN001, ANN202
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # a page that re-renders replaces the elements a condition looked at: ask again
    return WebDriverWait(browser, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def _alert(browser):  # noqa: ANN001, ANN202 - the open alert / confirm / prompt, or None
    from selenium.common.exceptions import NoAlertPresentException

    try:
        return browser.switch_to.alert
    except NoAlertPresentException:
        return None


def _open_as(browser, url: str, annotator: str):  # noqa: ANN001, ANN202
    """Open the page and type the annotator's name; the name box."""
    from selenium.webdriver.common.by import By

    browser.get(url + "/")
    box = browser.find_element(By.ID, "annotator")
    box.clear()
    box.send_keys(annotator)
    return box


def test_browser_answers_with_clicks_and_keys(project_dir: Path, browser, live_server) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    _open_as(browser, live_server(create_app(project_dir)), "tester")
    _wait(browser, lambda b: b.find_element(By.ID, "question").text.startswith("Is this"))
    first = browser.find_element(By.TAG_NAME, "body").get_attribute("data-face-id")
    _wait(browser, lambda b: b.execute_script("return document.getElementById('crop').naturalWidth") == 256)
    browser.find_element(By.ID, "btn-yes").click()  # a click
    _wait(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-face-id") != first)
    second = browser.find_element(By.TAG_NAME, "body").get_attribute("data-face-id")
    idle = lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-busy") == ""  # noqa: E731
    _wait(browser, idle)
    browser.find_element(By.TAG_NAME, "body").send_keys("n")  # a key
    _wait(browser, lambda b: len(_answers(project_dir)) == 2 and idle(b))
    browser.find_element(By.TAG_NAME, "body").send_keys("f")
    _wait(browser, lambda b: len(_answers(project_dir)) == 3)
    browser.find_element(By.TAG_NAME, "body").send_keys("u")  # undo the last one (waits for the answer in flight)
    _wait(browser, lambda b: _answers(project_dir)[-1][-1] == 1)
    rows = _answers(project_dir)
    assert rows[0][:2] == (int(first), "yes") and rows[1][:2] == (int(second), "no")
    assert rows[2][1] == "not_face" and all(r[3] == "tester" for r in rows)

    # groups: name the unnamed cluster, leaving nothing out
    browser.find_element(By.ID, "tab-groups").click()
    card = _wait(browser, lambda b: next((c for c in b.find_elements(By.CSS_SELECTOR, ".group")
                                          if c.get_attribute("data-key").startswith("cluster-")
                                          and len(c.find_elements(By.TAG_NAME, "img")) == 2), None))
    card.find_element(By.CSS_SELECTOR, ".group-name").send_keys("Carol")
    card.find_element(By.CSS_SELECTOR, ".group-yes").click()
    alert = _wait(browser, _alert)  # a new name is created only once confirmed
    assert "'Carol' is a new name" in alert.text
    alert.accept()
    _wait(browser, lambda b: any(r[2] == "Carol" for r in _answers(project_dir)))
    assert sum(r[2] == "Carol" and r[1] == "yes" for r in _answers(project_dir)) == 2
    browser.find_element(By.ID, "tab-progress").click()
    _wait(browser, lambda b: "Carol" in b.find_element(By.ID, "progress-table").text)
    assert "crops reviewed" in browser.find_element(By.ID, "totals").text


def test_browser_screenshot_for_the_readme(project_dir: Path, browser, live_server, tmp_path: Path) -> None:  # noqa: ANN001
    """The question view renders its three images (saved for a person to look at)."""
    url = live_server(create_app(project_dir))
    browser.get(url + "/")
    _wait(browser, lambda b: b.execute_script(
        "return [...document.images].filter(i => i.complete && i.naturalWidth > 0).length") >= 3)
    out = tmp_path / "annotate.png"
    browser.save_screenshot(str(out))
    assert out.stat().st_size > 10_000


def test_answers_survive_a_server_restart(project_dir: Path) -> None:
    client = TestClient(create_app(project_dir), base_url=LOCAL)
    q = client.get("/api/question").json()
    client.post("/api/answer", json={"face_ids": [q["face_id"]], "answer": "skip"})
    client.close()
    with Project(project_dir) as project:
        assert review.face_states(project.db)[q["face_id"]].skips == 1


# ---- several people, names, keys and layout in Chromium ------------------------------------------------


def _face_on_screen(browser) -> str:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    return browser.find_element(By.TAG_NAME, "body").get_attribute("data-face-id")


def _idle(browser) -> bool:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    return browser.find_element(By.TAG_NAME, "body").get_attribute("data-busy") == ""


def _key(browser, key: str) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    browser.find_element(By.TAG_NAME, "body").send_keys(key)


def test_browser_two_tabs_hold_their_own_questions_and_undo_their_own_answers(
    project_dir: Path, browser, live_server  # noqa: ANN001
) -> None:
    from selenium.webdriver.common.by import By

    url = live_server(create_app(project_dir))
    tab_a = browser.current_window_handle
    browser.get(url + "/")
    _wait(browser, lambda b: _face_on_screen(b))
    face_a = _face_on_screen(browser)
    browser.switch_to.new_window("tab")
    tab_b = browser.current_window_handle
    try:
        browser.get(url + "/")
        _wait(browser, lambda b: _face_on_screen(b))
        face_b = _face_on_screen(browser)
        assert face_a != face_b  # the same annotator name in both tabs, two sessions
        browser.switch_to.window(tab_a)
        _key(browser, "y")
        _wait(browser, lambda b: len(_answers(project_dir)) == 1 and _idle(b))
        browser.switch_to.window(tab_b)
        _key(browser, "f")
        _wait(browser, lambda b: len(_answers(project_dir)) == 2 and _idle(b))
        browser.switch_to.window(tab_a)
        _key(browser, "u")
        _wait(browser, lambda b: "Undone" in b.find_element(By.ID, "status").text)
        rows = _answers(project_dir)
        assert [(r[0], r[1], r[4]) for r in rows] == [(int(face_a), "yes", 1), (int(face_b), "not_face", 0)]
        shown = browser.find_element(By.ID, "status").text
        assert f'"Yes, ' in shown and f"face {face_a}" in shown, shown  # which answer was taken back
        assert browser.find_element(By.ID, "mine").text == "you: 1 answer"
        _wait(browser, lambda b: _face_on_screen(b) == face_a)  # and it is asked again
        _key(browser, "u")  # nothing else of this tab's to undo: B's answer stays
        _wait(browser, lambda b: "Nothing to undo in this tab" in b.find_element(By.ID, "status").text)
        assert _answers(project_dir)[1][4] == 0
    finally:
        browser.switch_to.window(tab_b)
        browser.close()
        browser.switch_to.window(tab_a)


def _groups_card(browser, url: str, key_prefix: str):  # noqa: ANN001, ANN202
    """Open the page's Groups view; the first group card whose key starts with ``key_prefix``."""
    from selenium.webdriver.common.by import By

    browser.get(url + "/")
    browser.find_element(By.ID, "tab-groups").click()
    return _wait(browser, lambda b: next((c for c in b.find_elements(By.CSS_SELECTOR, ".group")
                                          if c.get_attribute("data-key").startswith(key_prefix)), None))


def test_browser_stale_group_is_refused_and_reloaded(project_dir: Path, browser, live_server) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    card = _groups_card(browser, live_server(create_app(project_dir)), "identity-")
    key = card.get_attribute("data-key")
    faces = [int(i.get_attribute("data-face-id")) for i in card.find_elements(By.CSS_SELECTOR, ".grid img")]
    with Project(project_dir) as project:  # carol answers one of them meanwhile
        review.record_answer(project.db, "carol", [faces[0]], "not_face", session="carol-session-1")
    card.find_element(By.CSS_SELECTOR, ".group-yes").click()
    _wait(browser, lambda b: "Not saved" in b.find_element(By.ID, "status").text)
    assert "carol answered 'not face'" in browser.find_element(By.ID, "status").text
    assert [r[1] for r in _answers(project_dir)] == ["not_face"]  # nothing of the stale page was saved
    card = _wait(browser, lambda b: next((c for c in b.find_elements(By.CSS_SELECTOR, ".group")
                                          if c.get_attribute("data-key") == key), None))
    _wait(browser, lambda b: faces[0] not in [int(i.get_attribute("data-face-id"))
                                              for i in b.find_elements(By.CSS_SELECTOR, f'.group[data-key="{key}"] .grid img')])


def test_browser_non_ascii_annotator_name(project_dir: Path, browser, live_server) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    box = _open_as(browser, live_server(create_app(project_dir)), "José")
    _wait(browser, lambda b: _face_on_screen(b))
    _key(browser, "s")
    _wait(browser, lambda b: len(_answers(project_dir)) == 1)
    assert _answers(project_dir)[0][3] == "José"
    box.clear()
    box.send_keys("<b>")
    _key(browser, "s")
    _wait(browser, lambda b: "Annotator name" in b.find_element(By.ID, "status").text)
    assert len(_answers(project_dir)) == 1  # an invalid name is refused on the page, never replaced


def test_browser_new_name_confirm_and_rename_merge(project_dir: Path, browser, live_server) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    card = _groups_card(browser, live_server(create_app(project_dir)), "cluster-")
    card.find_element(By.CSS_SELECTOR, ".group-name").send_keys("Bobb")
    card.find_element(By.CSS_SELECTOR, ".group-yes").click()
    alert = _wait(browser, _alert)
    assert "'Bobb' is a new name (existing names that look alike: Bob)" in alert.text
    alert.dismiss()
    _wait(browser, lambda b: "the name was not created" in b.find_element(By.ID, "status").text)
    assert _answers(project_dir) == []
    browser.find_element(By.ID, "tab-progress").click()
    row = _wait(browser, lambda b: next((r for r in b.find_elements(By.CSS_SELECTOR, "#progress-table tbody tr")
                                         if r.text.startswith("Bob")), None))
    row.find_element(By.CSS_SELECTOR, "button.rename").click()
    prompt = _wait(browser, _alert)
    prompt.send_keys("alice")
    prompt.accept()
    confirm = _wait(browser, _alert)
    assert "merges the two into 'Alice'" in confirm.text
    confirm.accept()
    _wait(browser, lambda b: "Bob merged into Alice" in b.find_element(By.ID, "status").text)
    _wait(browser, lambda b: [r.text.split()[0] for r in b.find_elements(By.CSS_SELECTOR, "#progress-table tbody tr")]
          == ["Alice"])


def test_browser_groups_keys_and_select_all_none(project_dir: Path, browser, live_server) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    url = live_server(create_app(project_dir))
    browser.get(url + "/")
    browser.find_element(By.ID, "tab-groups").click()
    _wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, ".group")) >= 2)
    out = lambda b, i: [img.get_attribute("class") == "out"  # noqa: E731
                        for img in b.find_elements(By.CSS_SELECTOR, ".group")[i].find_elements(By.CSS_SELECTOR, ".grid img")]
    current = lambda b: [c.get_attribute("data-key") for c in b.find_elements(By.CSS_SELECTOR, ".group.current")]  # noqa: E731
    keys = [c.get_attribute("data-key") for c in browser.find_elements(By.CSS_SELECTOR, ".group")]
    assert current(browser) == keys[:1]
    _key(browser, "x")
    assert all(out(browser, 0)) and not any(out(browser, 1))
    _key(browser, "a")
    assert not any(out(browser, 0))
    _key(browser, "j")
    assert current(browser) == keys[1:2]
    second = browser.find_elements(By.CSS_SELECTOR, ".group")[1]
    second.find_element(By.CSS_SELECTOR, ".select-none").click()
    assert all(out(browser, 1))
    second.find_element(By.CSS_SELECTOR, ".select-all").click()
    assert not any(out(browser, 1))
    _key(browser, "k")
    assert current(browser) == keys[:1]
    first = browser.find_elements(By.CSS_SELECTOR, ".group")[0]
    n_faces = len(first.find_elements(By.CSS_SELECTOR, ".grid img"))
    first.find_element(By.CSS_SELECTOR, ".grid img").click()  # leave one out, then Y answers for the rest
    if keys[0].startswith("cluster-"):
        first.find_element(By.CSS_SELECTOR, ".group-name").send_keys("Dora")
        first.click()
    _key(browser, "y")
    if keys[0].startswith("cluster-"):
        _wait(browser, _alert).accept()
    _wait(browser, lambda b: len(_answers(project_dir)) == n_faces - 1)
    assert {r[1] for r in _answers(project_dir)} == {"yes"}


def test_browser_frame_panel_keeps_its_size_while_loading(
    project_dir: Path, browser, live_server, monkeypatch  # noqa: ANN001
) -> None:
    import time as _time

    from selenium.webdriver.common.by import By

    real = Project.load_frame

    def slow(self, frame_id):  # noqa: ANN001, ANN202
        _time.sleep(1.5)
        return real(self, frame_id)

    monkeypatch.setattr(Project, "load_frame", slow)
    url = live_server(create_app(project_dir))
    size = "const r = document.querySelector('figure.frame').getBoundingClientRect(); return [r.width, r.height];"
    loaded = "const i = document.getElementById('frame'); return i.complete && i.naturalWidth > 0;"
    browser.get(url + "/")
    _wait(browser, lambda b: b.find_element(By.ID, "question").text.startswith("Is this"))
    while_loading = browser.execute_script(size)
    assert not browser.execute_script(loaded)
    _wait(browser, lambda b: b.execute_script(loaded))
    after = browser.execute_script(size)
    assert while_loading == after and after[1] > 200, (while_loading, after)
    first = _face_on_screen(browser)
    browser.find_element(By.ID, "btn-skip").click()
    _wait(browser, lambda b: _face_on_screen(b) != first)
    assert browser.execute_script(size) == after
