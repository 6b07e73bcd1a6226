"""The uvicorn entry point: settings from the environment, built once, at the edge.

``uvicorn --factory entitlements.api.asgi:app`` (what ``entitlements serve`` runs).
"""

from __future__ import annotations

from fastapi import FastAPI

from entitlements.api.app import create_app
from entitlements.settings import Settings


def app() -> FastAPI:
    return create_app(Settings())
