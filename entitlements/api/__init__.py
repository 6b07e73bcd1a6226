"""The REST adapter: FastAPI routes over the service layer."""

from entitlements.api.app import create_app

__all__ = ["create_app"]
