"""``GET /healthz``: liveness, this worker's counters and limits (the demo page reads its defaults here)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Depends

from acfd.serve.dependencies import get_service
from acfd.serve.schemas import Health
from acfd.serve.service import Service

router = APIRouter(tags=["service"])


@router.get("/healthz", response_model=Health)
async def healthz(service: Service = Depends(get_service)) -> dict[str, Any]:
    """Liveness and this worker's counters; also the defaults the demo page uses."""
    settings, worker = service.settings, service.worker
    return {
        "status": "ok" if worker is not None else "starting",
        "model": service.model,
        "pid": os.getpid(),
        "in_flight": service.in_flight,
        "queued": service.queued,
        "pixels_in_flight": service.pixels.used if service.pixels is not None else 0,
        "upload_bytes_in_flight": service.uploads.bytes,
        "rejected": service.rejected,
        "batches": worker.batches if worker else 0,
        "images": worker.images if worker else 0,
        "score_thr": settings.score_thr,
        "min_score_thr": settings.min_score_thr,
        "identify": service.identifier is not None,
        "api_key_required": settings.api_key is not None,
        "limits": {
            "max_upload_bytes": settings.max_upload_bytes,
            "max_pixels": settings.max_pixels,
            "max_pixels_in_flight": settings.pixel_budget,
            "max_upload_bytes_in_flight": settings.upload_budget,
            "request_timeout_s": settings.request_timeout_s,
            "max_in_flight": settings.max_in_flight,
            "upload_read_timeout_s": settings.upload_read_timeout_s,
            "min_upload_rate": settings.min_upload_rate,
            "upload_grace_s": settings.upload_grace_s,
            "header_timeout_s": settings.header_timeout_s,
            "keep_alive_timeout_s": settings.keep_alive_timeout_s,
            "max_connections": settings.max_connections,
        },
    }
