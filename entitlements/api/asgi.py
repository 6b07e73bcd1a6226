"""The uvicorn entry point: settings from the environment, built once, at the edge.

``uvicorn --factory entitlements.api.asgi:app`` (what ``entitlements serve`` runs).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from uvicorn.logging import DefaultFormatter

from entitlements.api.app import create_app
from entitlements.settings import Settings


def app() -> FastAPI:
    settings = Settings()
    log_like_uvicorn(settings.log_level)
    return create_app(settings)


def log_like_uvicorn(level: str) -> None:
    """The service's loggers (``entitlements.*``) write to stderr beside uvicorn's, in
    its format and from ``ENTITLEMENTS_LOG_LEVEL`` up. (Unconfigured, Python would show
    only their warnings, bare, and drop their info lines.) Runs in each worker process;
    a logger someone has already configured is left alone."""
    logger = logging.getLogger("entitlements")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
