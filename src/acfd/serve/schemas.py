"""The service's response bodies as pydantic models: FastAPI validates every answer against them and
they document ``/openapi.json`` and ``/docs``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Face(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in the uploaded image's pixels")
    score: float


class Candidate(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    similarity: float = Field(description="cosine similarity")


class IdentifiedFace(Face):
    identity: str | None = Field(description="the best gallery match, or null when below the unknown threshold")
    similarity: float = Field(description="cosine similarity of the best match")
    candidates: list[Candidate] = Field(description="the k best matches")


class DetectResponse(BaseModel):
    faces: list[Face]
    image_size: list[int] = Field(description="width, height of the upload")
    model: str
    ms: float = Field(description="server time for this request, milliseconds")
    scale: int = Field(description="the test scale used (longer side of the network input)")
    score_thr: float


class IdentifyResponse(DetectResponse):
    faces: list[IdentifiedFace]  # type: ignore[assignment]


class Limits(BaseModel):
    max_upload_bytes: int
    max_pixels: int = Field(description="most decoded pixels per image")
    max_pixels_in_flight: int = Field(description="most decoded pixels held at once by this worker")
    max_upload_bytes_in_flight: int = Field(description="most bytes held by bodies being received")
    request_timeout_s: float
    max_in_flight: int = Field(description="most requests with their body in, per worker")
    upload_read_timeout_s: float
    min_upload_rate: float = Field(description="bytes/s, after upload_grace_s")
    upload_grace_s: float
    header_timeout_s: float
    keep_alive_timeout_s: float
    max_connections: int


class Health(BaseModel):
    status: str = Field(description="ok, or starting")
    model: str
    pid: int
    in_flight: int = Field(description="requests with their body in, not yet answered")
    queued: int = Field(description="images waiting for the model")
    pixels_in_flight: int = Field(description="decoded pixels held now")
    upload_bytes_in_flight: int = Field(description="bytes held by the bodies being received now")
    rejected: int = Field(description="requests refused with 429 so far")
    batches: int
    images: int
    score_thr: float
    min_score_thr: float
    identify: bool = Field(description="whether POST /v1/identify has a gallery")
    api_key_required: bool
    limits: Limits


class ErrorDetail(BaseModel):
    detail: str = Field(description="one line: what was wrong and what is accepted")


#: The error answers of the upload endpoints, for the OpenAPI description.
UPLOAD_ERRORS: dict[int | str, dict] = {
    code: {"model": ErrorDetail, "description": text}
    for code, text in (
        (400, "empty upload"),
        (401, "missing or wrong API key (when the server has one)"),
        (408, "upload too slow"),
        (413, "body or image too large"),
        (415, "not an image, or an unsupported content type"),
        (429, "busy: retry after Retry-After seconds"),
        (503, "not answered in time: retry after Retry-After seconds"),
    )
}
