"""acfd.web.uploads: the request-body limits shared by the web apps (any ASGI app, any way of reading)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from acfd.web.uploads import BodyLimits, UploadLimits


class Answer(BaseModel):
    text: str


def _app(**limits) -> FastAPI:
    app = FastAPI()

    @app.post("/json")
    async def json_body(answer: Answer) -> dict:  # FastAPI reads and parses the body itself
        return {"length": len(answer.text)}

    @app.get("/page")
    async def page() -> dict:
        return {"ok": True}

    app.add_middleware(BodyLimits, limits=UploadLimits(**limits))
    return app


def test_a_chunked_json_body_over_the_limit_gets_413_not_fastapis_400():
    with TestClient(_app(max_bytes=100)) as client:
        chunks = iter([b'{"text": "', b"x" * 150, b'"}'])
        over = client.post("/json", content=chunks, headers={"content-type": "application/json"})
        declared = client.post("/json", json={"text": "x" * 150})
        fine = client.post("/json", json={"text": "short"})
        page = client.get("/page")
    assert over.status_code == 413 and over.json() == {"detail": "upload larger than the limit of 100 bytes"}
    assert declared.status_code == 413 and declared.headers["connection"] == "close"
    assert fine.json() == {"length": 5} and page.status_code == 200


@pytest.mark.parametrize("field", ["max_bytes", "read_timeout_s", "min_rate", "max_bytes_in_flight"])
def test_limits_must_be_positive(field):
    values = {"max_bytes": 10, field: 0}
    with pytest.raises(ValueError, match=field):
        UploadLimits(**values)
