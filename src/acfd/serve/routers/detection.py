"""``POST /v1/detect`` and ``POST /v1/identify``: an upload in, the faces out (with names for identify)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query

from acfd.serve.dependencies import (
    DetectParams,
    Upload,
    detect_params,
    get_service,
    read_upload,
    require_api_key,
    room_for_a_request,
)
from acfd.serve.errors import ServiceError
from acfd.serve.schemas import UPLOAD_ERRORS, DetectResponse, IdentifyResponse
from acfd.serve.service import Answer, Service, timer

router = APIRouter(prefix="/v1", tags=["faces"], dependencies=[Depends(require_api_key)], responses=UPLOAD_ERRORS)

#: The request body in the OpenAPI description (the endpoints read it themselves, after admission).
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def faces_above(dets: Any, thr: float, reduction: int = 1) -> list[dict[str, Any]]:
    """The faces scoring above ``thr``, boxes times ``reduction`` (into the upload's pixels)."""
    return [
        {"box": [round(float(v) * reduction, 2) for v in box], "score": round(float(s), 4)}
        for box, s in zip(np.asarray(dets.boxes).reshape(-1, 4), dets.scores)
        if s > thr
    ]


def _response(service: Service, answer: Answer, faces: list[dict[str, Any]], params: DetectParams, ms: float) -> dict:
    return {
        "faces": faces,
        "image_size": list(answer.size),
        "model": service.model,
        "ms": ms,
        "scale": params.scale,
        "score_thr": params.score_thr,
    }


@router.post("/detect", response_model=DetectResponse, openapi_extra=UPLOAD_BODY)
async def detect(
    params: DetectParams = Depends(detect_params),
    _room: None = Depends(room_for_a_request),
    upload: Upload = Depends(read_upload),
    service: Service = Depends(get_service),
) -> dict[str, Any]:
    """Find the faces in one image (multipart field ``file``, or the raw bytes with an image type)."""
    elapsed = timer()
    answer = await service.detect(upload.data, upload.name, params.scale)
    faces = faces_above(answer.result, params.score_thr, answer.reduction)
    return _response(service, answer, faces, params, elapsed())


@router.post("/identify", response_model=IdentifyResponse, openapi_extra=UPLOAD_BODY)
async def identify(
    params: DetectParams = Depends(detect_params),
    k: int = Query(1, ge=1, le=20, description="gallery matches per face"),
    _room: None = Depends(room_for_a_request),
    upload: Upload = Depends(read_upload),
    service: Service = Depends(get_service),
) -> dict[str, Any]:
    """Find the faces and name each by its nearest gallery identity (needs a gallery)."""
    elapsed = timer()
    identifier = service.identifier
    if identifier is None:
        raise ServiceError(501, "no gallery is configured: start the server with --gallery FILE")

    def finish(dets: Any, image: np.ndarray, reduction: int) -> list[dict[str, Any]]:
        faces = faces_above(dets, params.score_thr)  # in the decoded image's pixels, for the crops
        names = identifier(image, [f["box"] for f in faces], k=k)
        return [
            {**face, "box": [round(v * reduction, 2) for v in face["box"]], **who} for face, who in zip(faces, names)
        ]

    answer = await service.detect(upload.data, upload.name, params.scale, finish)
    return _response(service, answer, answer.result, params, elapsed())
