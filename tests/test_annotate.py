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
    client = TestClient(create_app(project_dir))
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
    client = TestClient(create_app(project_dir))
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
    client = TestClient(create_app(project_dir, token=token))
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
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(condition)


def test_browser_answers_with_clicks_and_keys(project_dir: Path, browser, live_server) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    url = live_server(create_app(project_dir))
    browser.get(url + "/")
    name_box = browser.find_element(By.ID, "annotator")
    name_box.clear()
    name_box.send_keys("tester")
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
    client = TestClient(create_app(project_dir))
    q = client.get("/api/question").json()
    client.post("/api/answer", json={"face_ids": [q["face_id"]], "answer": "skip"})
    client.close()
    with Project(project_dir) as project:
        assert review.face_states(project.db)[q["face_id"]].skips == 1
