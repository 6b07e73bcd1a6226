"""``/docs`` (Swagger UI) and ``/redoc``, served with assets from an installed package.

FastAPI's own pages load Swagger UI's JavaScript and CSS from a CDN: a blank page on a
machine without internet, and a note to a third party whenever someone reads the docs
on one with it. The files come instead from the ``fastapi-offline`` distribution, which
ships Swagger UI 5 (it renders OpenAPI 3.1, the version of our document) and ReDoc as
plain files; only those files are used, served under ``/docs/assets``. Who may call
these routes: anyone (the document is public, as ``/openapi.json`` is).
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

ASSETS = "/docs/assets"
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"


def assets_dir() -> Path:
    """Where the installed ``fastapi-offline`` keeps Swagger UI's and ReDoc's files."""
    spec = find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the API docs need the fastapi-offline package: pip install -e .")
    path = Path(next(iter(spec.submodule_search_locations))) / "static"
    missing = [n for n in (SWAGGER_JS, SWAGGER_CSS, REDOC_JS) if not (path / n).is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline at {path} lacks {', '.join(missing)}")
    return path


def install(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc`` and their assets (create the app with ``docs_url=None``
    and ``redoc_url=None``)."""
    app.mount(ASSETS, StaticFiles(directory=assets_dir()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/{SWAGGER_JS}",
            swagger_css_url=f"{root}{ASSETS}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{root}{ASSETS}/{FAVICON}",
            oauth2_redirect_url=None,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/{REDOC_JS}",
            redoc_favicon_url=f"{root}{ASSETS}/{FAVICON}",
            with_google_fonts=False,
        )
