"""A benchmark reports a phase that fails instead of crashing the run.

Each script measures several phases; one that raises (a server that did not start, a
timeout, a tool that is missing) is recorded as ``{"error": "..."}`` in the results,
said on stderr, shown as ``failed: ...`` in the table, and the other phases still run.
The script then exits 1, so a failing phase is never mistaken for a clean run.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def failure(name: str, exc: BaseException) -> dict[str, str]:
    """What a failed phase reports (and says on stderr)."""
    error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]  # one line, for tables
    print(f"phase {name} failed: {error}", file=sys.stderr)
    return {"error": error}


def run_phase(out: dict[str, Any], name: str, measure: Callable[[], Any]) -> bool:
    """``out[name] = measure()``, or its failure; did it succeed?"""
    try:
        out[name] = measure()
    except Exception as exc:
        out[name] = failure(name, exc)
        return False
    return True


async def run_phase_async(
    out: dict[str, Any], name: str, measure: Callable[[], Awaitable[Any]]
) -> bool:
    """The same, for a coroutine."""
    try:
        out[name] = await measure()
    except Exception as exc:
        out[name] = failure(name, exc)
        return False
    return True


def error_of(value: Any) -> str | None:
    """The error a phase's result records, if it failed."""
    if isinstance(value, Mapping) and isinstance(value.get("error"), str):
        return str(value["error"])
    return None


def failed_phases(results: Mapping[str, Any]) -> list[str]:
    """The names of the phases (top-level keys) that failed."""
    return [name for name, value in results.items() if error_of(value) is not None]


def report_failures(results: Mapping[str, Any]) -> int:
    """Say which phases failed; the script's exit status (0: none did)."""
    failed = failed_phases(results)
    if failed:
        print(f"{len(failed)} phase(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
