"""Whether OpenTelemetry's standard variables ask for traces (issue 15).

Kept apart from ``entitlements.tracing`` so the question costs no import: with no
variable set, the app never imports OpenTelemetry at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

TRIGGERS: Final = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


def enabled(environ: Mapping[str, str]) -> bool:
    """True when one of ``TRIGGERS`` is set (``OTEL_TRACES_EXPORTER=none`` is not a
    request for traces) and ``OTEL_SDK_DISABLED`` is not ``true``."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return any(environ.get(name, "").strip() for name in TRIGGERS)


__all__ = ["TRIGGERS", "enabled"]
