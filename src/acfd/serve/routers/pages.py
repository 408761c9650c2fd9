"""The pages for people: the demo at ``/`` (a Jinja2 template rendered with this server's settings)
and the API docs at ``/docs`` (Swagger UI from files installed with the ``fastapi-offline`` package,
so it works without a network; without that package the page says so and points to
``/openapi.json``)."""

from __future__ import annotations

from importlib import resources
from importlib.util import find_spec
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from acfd.serve.dependencies import get_service
from acfd.serve.service import Service

# The demo page is a template, kept out of the /static folder so that the unrendered copy cannot be
# fetched from there.
TEMPLATES = Jinja2Templates(directory=str(resources.files("acfd.serve") / "templates"))
#: Where the docs' Swagger UI files are served from (when installed).
DOCS_ASSETS_URL = "/static/docs"

router = APIRouter(include_in_schema=False)


def swagger_ui_dir() -> Path | None:
    """The folder of Swagger UI's script and style shipped by ``fastapi-offline``, if installed."""
    spec = find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


@router.get("/")
async def demo_page(request: Request, service: Service = Depends(get_service)) -> HTMLResponse:
    settings = service.settings
    return TEMPLATES.TemplateResponse(
        request,
        "index.html",
        {
            "score_thr": f"{settings.score_thr:.2f}",
            "min_score_thr": f"{settings.min_score_thr:g}",
            "docs_offline": swagger_ui_dir() is not None,
            "api_key_required": settings.api_key is not None,
        },
    )


@router.get("/docs")
async def api_docs(request: Request) -> HTMLResponse:
    if swagger_ui_dir() is None:
        return TEMPLATES.TemplateResponse(request, "no_docs.html", {}, status_code=200)
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title}: API docs",
        swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
    )
