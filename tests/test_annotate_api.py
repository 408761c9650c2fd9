"""The annotation app's HTTP API with several people at once and hostile requests: sessions, face
versions, names, the token cookie, the Host check, body limits (FastAPI TestClient and a live server)."""

from __future__ import annotations

import http.client
import json
import socket
import sqlite3
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from acfd.annotate import app as annotate_app
from acfd.annotate.app import MAX_BODY_BYTES, create_app
from acfd.assemble import review
from acfd.assemble.export import export_project
from acfd.assemble.project import Project
from acfd.cli import app as cli

from test_assemble import _run, dataset  # noqa: F401 - the synthetic project fixture

LOCAL = "http://127.0.0.1:8765"
A, B = "session-aaaaaaaa", "session-bbbbbbbb"


@pytest.fixture
def project_dir(dataset: dict[str, Path]) -> Path:  # noqa: F811
    project, _ = _run(dataset)
    project.close()
    return dataset["project"]


@pytest.fixture
def client(project_dir: Path) -> TestClient:
    return TestClient(create_app(project_dir), base_url=LOCAL)


def _rows(project_dir: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(project_dir / "project.db")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _reserve(client: TestClient, session: str, annotator: str = "annotator", **extra: object) -> dict:
    r = client.post("/api/question", json={"annotator": annotator, "session": session, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def _answer(client: TestClient, session: str, q: dict, answer: str, annotator: str = "annotator") -> object:
    return client.post("/api/answer", json={
        "annotator": annotator, "session": session, "face_ids": [q["face_id"]], "versions": [q["version"]],
        "answer": answer, "identity_id": q["identity_id"],
    })


# ---- 8: leases and undo belong to a browser session ------------------------------------------------


def test_two_sessions_of_one_annotator_never_hold_the_same_question(client: TestClient, project_dir: Path) -> None:
    qa, qb = _reserve(client, A), _reserve(client, B)  # the same annotator name in two tabs
    assert qa["face_id"] != qb["face_id"]
    assert _reserve(client, A)["face_id"] == qa["face_id"]  # asking again gives the question it holds
    held = dict(_rows(project_dir, "SELECT id, lease_by FROM faces WHERE lease_by IS NOT NULL"))
    assert held == {qa["face_id"]: f"session:{A}", qb["face_id"]: f"session:{B}"}  # one question per session
    assert client.post("/api/release", json={"session": A}).json() == {"released": 1}
    assert _rows(project_dir, "SELECT COUNT(*) FROM faces WHERE lease_by IS NOT NULL") == [(1,)]


def test_undo_takes_back_only_the_sessions_own_answer(client: TestClient, project_dir: Path) -> None:
    qa, qb = _reserve(client, A), _reserve(client, B)
    assert _answer(client, A, qa, "yes").status_code == 200
    assert _answer(client, B, qb, "not_face").status_code == 200
    undone = client.post("/api/undo", json={"session": A}).json()["undone"]
    assert undone["face_ids"] == [qa["face_id"]] and undone["answer"] == "yes" and undone["name"] == qa["name"]
    rows = _rows(project_dir, "SELECT a.face_id, t.undone_at IS NOT NULL FROM answers a JOIN actions t ON t.id = a.action_id")
    assert sorted(rows) == sorted([(qa["face_id"], 1), (qb["face_id"], 0)])
    assert client.post("/api/undo", json={"session": A}).json()["undone"] is None  # B's answer stays
    assert client.post("/api/undo", json={"session": B}).json()["undone"]["face_ids"] == [qb["face_id"]]


# ---- 9: a version per face: a stale answer is refused ------------------------------------------------


def test_stale_group_answer_is_refused_and_the_newer_answer_stands(client: TestClient, project_dir: Path, tmp_path: Path) -> None:
    group = next(g for g in client.get("/api/groups").json()["groups"] if g["kind"] == "candidate")  # bob's page
    face = group["face_ids"][0]
    q = {"face_id": face, "version": group["versions"][0], "identity_id": group["identity_id"]}
    assert _answer(client, A, q, "not_face", annotator="carol").status_code == 200  # carol, meanwhile
    r = client.post("/api/answer", json={
        "annotator": "bob", "session": B, "face_ids": group["face_ids"], "versions": group["versions"],
        "answer": "yes", "identity_id": group["identity_id"], "kind": "group",
    })
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "stale" and detail["face_ids"] == [face]
    assert f"face {face}: carol answered 'not face')" in detail["message"] and "nothing was saved" in detail["message"]
    with Project(project_dir) as project:
        assert review.face_states(project.db)[face].not_face
        export_project(project, tmp_path / "out")
    entry = next(e for e in json.loads((tmp_path / "out" / "manifest.json").read_text())["faces"] if e["face_id"] == face)
    assert entry["review"] == "not_face"
    fresh = next(g for g in client.get("/api/groups").json()["groups"] if g["key"] == group["key"])
    assert face not in fresh["face_ids"] or fresh["versions"][fresh["face_ids"].index(face)] != group["versions"][0]


def test_question_answer_after_undo_elsewhere_is_stale(client: TestClient) -> None:
    q = _reserve(client, A)
    assert _answer(client, B, q, "skip").status_code == 200  # another tab answered it (e.g. from Groups)
    r = _answer(client, A, q, "yes")
    assert r.status_code == 409 and r.json()["detail"]["code"] == "stale"
    bad = client.post("/api/answer", json={"face_ids": [q["face_id"]], "versions": [1, 2], "answer": "skip"})
    assert bad.status_code == 422


# ---- 12, 13: the token cookie per port; the Host check without a token ----------------------------------


def test_token_cookie_is_per_port_and_the_query_wins(project_dir: Path) -> None:
    one, two = "token-one-0123456789", "token-two-0123456789"
    c1 = TestClient(create_app(project_dir, token=one), base_url="http://127.0.0.1:8766")
    c2 = TestClient(create_app(project_dir, token=two), base_url="http://127.0.0.1:8767")
    assert c1.get(f"/?token={one}").status_code == 200
    assert c2.get(f"/?token={two}").status_code == 200
    assert c1.cookies.get("acfd_token_8766") == one and c2.cookies.get("acfd_token_8767") == two
    # a browser sends both cookies to both ports: each server reads its own
    both = f"acfd_token_8766={one}; acfd_token_8767={two}; acfd_token={two}"
    c1.cookies.clear()
    c2.cookies.clear()
    assert c1.get("/api/progress", headers={"Cookie": both}).status_code == 200
    assert c2.get("/api/progress", headers={"Cookie": both}).status_code == 200
    # a ?token= wins over a stale cookie of the same name
    assert c1.get(f"/api/progress?token={one}", headers={"Cookie": f"acfd_token_8766={two}"}).status_code == 200


def test_without_a_token_only_loopback_host_names_are_answered(project_dir: Path) -> None:
    client = TestClient(create_app(project_dir), base_url=LOCAL)
    q = client.get("/api/question").json()
    body = {"face_ids": [q["face_id"]], "answer": "not_face"}
    for host in ("evil.example", "evil.example:8765", "192.168.1.5:8765", "127.0.0.1.evil.example", ""):
        r = client.post("/api/answer", json=body, headers={"Host": host})
        assert r.status_code == 403 and "localhost" in r.json()["detail"], host
        assert client.get("/", headers={"Host": host}).status_code == 403
    assert _rows(project_dir, "SELECT COUNT(*) FROM answers") == [(0,)]
    for host in ("127.0.0.1:8765", "localhost:8765", "localhost", "[::1]:8765", "app.localhost:8765", "127.0.0.2"):
        assert client.get("/api/progress", headers={"Host": host}).status_code == 200, host
    token = "s3cret-token-0123456789"
    with_token = TestClient(create_app(project_dir, token=token), base_url="http://annotate.example.org")
    assert with_token.get("/api/progress", headers={"X-ACFD-Token": token}).status_code == 200


# ---- 14: non-ASCII annotator names -----------------------------------------------------------------------


def test_non_ascii_annotator_names_are_recorded(client: TestClient, project_dir: Path) -> None:
    q = _reserve(client, A, annotator="Jose\u0301")  # decomposed: stored composed
    assert _answer(client, A, q, "skip", annotator="José").status_code == 200
    q = _reserve(client, B, annotator="李 小龙")
    assert _answer(client, B, q, "skip", annotator="李 小龙").status_code == 200
    assert [r[0] for r in _rows(project_dir, "SELECT annotator FROM actions ORDER BY id")] == ["José", "李 小龙"]
    assert client.get("/api/progress", params={"annotator": "José"}).json()["mine"] == 1
    for bad in ("<b>", "a" * 41, "tab\there", ""):
        assert client.post("/api/answer", json={"annotator": bad, "face_ids": [q["face_id"]], "answer": "skip"}).status_code == 422


# ---- 15: body limits ----------------------------------------------------------------------------------------


def test_chunked_body_over_the_limit_gets_413(project_dir: Path, live_server) -> None:  # noqa: ANN001
    url = live_server(create_app(project_dir))
    host, port = url.removeprefix("http://").split(":")
    big = [b'{"annotator": "', b"a" * (MAX_BODY_BYTES // 2), b"a" * (MAX_BODY_BYTES // 2), b'x"}']
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", "/api/undo", body=iter(big), headers={"Content-Type": "application/json"}, encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413 and "larger than the limit" in json.loads(r.read())["detail"]
    conn.close()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)  # a small chunked body is read as usual
    conn.request("POST", "/api/undo", body=iter([b'{"annotator": ', b'"ann"}']), headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["undone"] is None
    conn.close()


def test_slow_body_gets_408(project_dir: Path, live_server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(annotate_app, "BODY_READ_TIMEOUT_S", 1.0)
    url = live_server(create_app(project_dir))
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /api/undo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"annot")
        t0 = time.monotonic()
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 408") and time.monotonic() - t0 < 20


# ---- 16: names: confirm before creating, one name whatever the case, rename / merge, none orphaned ----------


def _cluster(client: TestClient) -> dict:
    return next(g for g in client.get("/api/groups").json()["groups"] if g["kind"] == "cluster")


def _name_group(client: TestClient, g: dict, name: str, create: bool) -> object:
    return client.post("/api/answer", json={
        "annotator": "ann", "session": A, "face_ids": g["face_ids"], "versions": g["versions"], "answer": "yes",
        "name": name, "kind": "group", "create_name": create,
    })


def test_a_new_name_needs_confirming_and_a_case_variant_is_the_same_name(client: TestClient, project_dir: Path) -> None:
    g = _cluster(client)
    r = _name_group(client, g, "alicee", create=False)
    assert r.status_code == 409 and r.json()["detail"]["code"] == "new_name" and r.json()["detail"]["similar"] == ["Alice"]
    assert _rows(project_dir, "SELECT COUNT(*) FROM answers") == [(0,)]
    assert _rows(project_dir, "SELECT COUNT(*) FROM identities WHERE name = 'alicee'") == [(0,)]
    r = _name_group(client, g, "aLiCe", create=False)  # an existing name in another case: no question
    assert r.status_code == 200
    assert {n for (n,) in _rows(project_dir, "SELECT name FROM identities")} == {"Alice", "Bob"}
    g = client.get("/api/groups").json()["groups"][0]
    assert _name_group(client, g, "Carol", create=True).status_code == 200
    assert "Carol" in client.get("/api/groups").json()["identities"]


def test_undoing_the_answer_that_created_a_name_leaves_no_orphan(client: TestClient, project_dir: Path) -> None:
    g = _cluster(client)
    assert _name_group(client, g, "CON", create=True).status_code == 200
    assert "CON" in client.get("/api/groups").json()["identities"]
    assert client.post("/api/undo", json={"session": A}).json()["undone"]["name"] == "CON"
    assert "CON" not in client.get("/api/groups").json()["identities"]
    assert "CON" not in [r["name"] for r in client.get("/api/progress").json()["identities"]]
    g = _cluster(client)
    r = _name_group(client, g, "con", create=False)  # coming back needs a confirmation again
    assert r.status_code == 409 and r.json()["detail"]["code"] == "new_name"


def test_rename_and_merge_names(client: TestClient, project_dir: Path) -> None:
    ids = {r["name"]: r["identity_id"] for r in client.get("/api/progress").json()["identities"]}
    g = _cluster(client)
    assert _name_group(client, g, "fred", create=True).status_code == 200
    fred = {r["name"]: r["identity_id"] for r in client.get("/api/progress").json()["identities"]}["fred"]
    r = client.post("/api/names/rename", json={"annotator": "ann", "identity_id": fred, "name": "Fred"})
    assert r.status_code == 200 and r.json() == {"identity_id": fred, "name": "Fred", "merged": False}
    bob_group = next(x for x in client.get("/api/groups").json()["groups"] if x["name"] == "Bob")
    r = client.post("/api/names/rename", json={"annotator": "ann", "identity_id": ids["Bob"], "name": "alice"})
    assert r.status_code == 409 and r.json()["detail"] == {
        "code": "merge", "name": "Alice",
        "message": "'Alice' is already a name: renaming merges the two into 'Alice'; confirm to merge"}
    r = client.post("/api/names/rename", json={"annotator": "ann", "identity_id": ids["Bob"], "name": "ALICE", "merge": True})
    assert r.status_code == 200 and r.json() == {"identity_id": ids["Alice"], "name": "Alice", "merged": True}
    names = [x["name"] for x in client.get("/api/progress").json()["identities"]]
    assert sorted(names) == ["Alice", "Fred"]
    alice = next(x for x in client.get("/api/groups").json()["groups"] if x["name"] == "Alice")
    assert set(bob_group["face_ids"]) <= set(alice["face_ids"])  # Bob's candidates are Alice's now
    # the old page's Bob group is stale: refused
    stale = client.post("/api/answer", json={
        "annotator": "ann", "face_ids": bob_group["face_ids"], "versions": bob_group["versions"], "answer": "yes",
        "identity_id": ids["Alice"], "kind": "group"})
    assert stale.status_code == 409
    log = _rows(project_dir, "SELECT old_name, new_name, merged_into FROM identity_changes ORDER BY id")
    assert log == [("fred", "Fred", None), ("Bob", "Alice", ids["Alice"])]


# ---- 17: a GET reserves nothing; leases renew and go back; reachable URLs; counts ------------------------------


def test_get_question_reserves_nothing_and_leases_renew(client: TestClient, project_dir: Path) -> None:
    peek = client.get("/api/question", params={"session": A}).json()
    assert _rows(project_dir, "SELECT COUNT(*) FROM faces WHERE lease_by IS NOT NULL") == [(0,)]
    assert _reserve(client, B)["face_id"] == peek["face_id"]  # not kept from B by A's look
    assert client.post("/api/lease", json={"session": B, "face_id": peek["face_id"]}).status_code == 200
    lost = client.post("/api/lease", json={"session": A, "face_id": peek["face_id"]})
    assert lost.status_code == 409 and lost.json()["detail"]["code"] == "lease_lost"
    client.post("/api/release", json={"session": B})
    assert client.post("/api/lease", json={"session": A, "face_id": peek["face_id"]}).status_code == 200


def test_answer_and_undo_report_the_annotators_own_count(client: TestClient) -> None:
    q = _reserve(client, A, annotator="ann")
    assert _answer(client, A, q, "yes", annotator="ann").json()["mine"] == 1
    q2 = _reserve(client, A, annotator="ann")
    assert _answer(client, A, q2, "no", annotator="ann").json()["mine"] == 2
    r = client.post("/api/undo", json={"annotator": "ann", "session": A}).json()
    assert r["mine"] == 1 and r["undone"]["answer"] == "no" and r["undone"]["kind"] == "question"
    # after an undo the page asks about that face again: prefer gives it back to the session
    assert _reserve(client, A, annotator="ann", prefer=q2["face_id"])["face_id"] == q2["face_id"]


def test_wildcard_host_prints_reachable_addresses(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from acfd.cli import annotate_cmd

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(kw))
    monkeypatch.setattr(annotate_cmd, "local_addresses", lambda: ["192.0.2.7"])
    result = CliRunner().invoke(cli, ["annotate", str(project_dir), "--host", "0.0.0.0", "--port", "8799"])
    assert result.exit_code == 0, result.output
    assert "0.0.0.0" not in result.output
    assert "http://192.0.2.7:8799/?token=" in result.output and "http://127.0.0.1:8799/?token=" in result.output
    assert started["host"] == "0.0.0.0" and started["limit_concurrency"] == annotate_cmd.MAX_CONNECTIONS
    for addr in annotate_cmd.local_addresses():  # the real ones: addresses others can reach
        assert not addr.startswith(("127.", "0.", "169.254.")), addr
