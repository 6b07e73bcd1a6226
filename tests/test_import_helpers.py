"""Helpers for the import tests (fast generators of NDJSON and CSV files), and their checks.

Kept in a ``test_import*`` module so the import tests share one definition of
"a grant record"; the tests at the bottom keep the generators honest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import orjson

from entitlements.domain.model import GrantRow, grant_from_mapping, grant_from_row
from entitlements.service.import_formats import make_reader

TERRITORIES = ("GB;IE", "*", "US;CA", "DE;AT;CH", "FR", "JP")
ACTIONS = ("stream", "stream;download")
SUBJECTS = ("role:plan:premium", "role:plan:free", "*")


def grant_record(i: int, *, prefix: str = "g", source: str | None = None) -> dict[str, Any]:
    """The i-th generated grant, as the API's JSON; varied but deterministic."""
    record: dict[str, Any] = {
        "id": f"{prefix}{i:07d}",
        "subject": SUBJECTS[i % 3] if i % 7 else f"user:u{i % 1000}",
        "resource": f"track:T{i:07d}",
        "actions": ACTIONS[i % 2].split(";"),
        "territories": TERRITORIES[i % 6].split(";"),
    }
    if i % 10 == 1:
        record["territories"] = ["*"]
        record["exclude_territories"] = ["DE", "FR"]
    if i % 10 == 2:
        record["valid_from"] = "2026-01-01T00:00:00Z"
        record["valid_until"] = "2027-01-01T00:00:00Z"
    if i % 10 == 3:
        record["attributes"] = {"quality": "hifi", "model": "subscription"}
    if i % 10 == 4:
        record["effect"] = "deny"
    if source is not None:
        record["source"] = source
    return record


def ndjson_lines(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


CSV_HEADER = (
    "id,subject,resource,actions,territories,exclude_territories,valid_from,valid_until,"
    "effect,attributes,source\n"
)


def csv_row(record: dict[str, Any]) -> str:
    """One CSV line for a generated record (no cell needs quoting except attributes)."""
    attributes = record.get("attributes")
    cells = [
        record["id"],
        record["subject"],
        record["resource"],
        ";".join(record["actions"]),
        ";".join(record["territories"]),
        ";".join(record.get("exclude_territories", ())),
        record.get("valid_from", ""),
        record.get("valid_until", ""),
        record.get("effect", ""),
        '"' + orjson.dumps(attributes).decode().replace('"', '""') + '"' if attributes else "",
        record.get("source", ""),
    ]
    return ",".join(cells) + "\n"


def csv_text(records: Iterable[dict[str, Any]]) -> bytes:
    return (CSV_HEADER + "".join(csv_row(r) for r in records)).encode()


def write_ndjson(path: Path, n: int, *, start: int = 0, **kw: Any) -> Path:
    """n grant records, written in blocks so a million rows need little memory."""
    with path.open("wb") as f:
        for lo in range(start, start + n, 50_000):
            hi = min(lo + 50_000, start + n)
            f.write(ndjson_lines(grant_record(i, **kw) for i in range(lo, hi)))
    return path


def write_csv(path: Path, n: int, **kw: Any) -> Path:
    with path.open("wb") as f:
        f.write(CSV_HEADER.encode())
        for lo in range(0, n, 50_000):
            f.write(
                "".join(
                    csv_row(grant_record(i, **kw)) for i in range(lo, min(lo + 50_000, n))
                ).encode()
            )
    return path


async def chunked(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    """Bytes as an async stream of chunks (what an upload or a file read looks like)."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


class ListSink:
    """A RecordSink that keeps everything (for reader tests)."""

    def __init__(self) -> None:
        self.grants: list[tuple[int, Any]] = []
        self.resources: list[tuple[int, Any]] = []
        self.rejected: list[tuple[int, list[tuple[str, str]], str | None]] = []
        self.notes: list[str] = []

    def grant(self, line: int, row: GrantRow) -> None:
        self.grants.append((line, grant_from_row(row)))

    def resource(self, line: int, resource: Any) -> None:
        self.resources.append((line, resource))

    def reject(self, line: int, errors: Any, record_id: str | None, kind: str) -> None:
        self.rejected.append((line, [(e.field, e.message) for e in errors], record_id))

    def note(self, message: str) -> None:
        self.notes.append(message)


def read_all(fmt: str, data: bytes, chunk: int = 65536, **kw: Any) -> ListSink:
    """Run a reader over ``data`` in chunks of ``chunk`` bytes; fatal errors propagate."""
    sink = ListSink()
    reader = make_reader(fmt, sink, **kw)  # type: ignore[arg-type]
    for i in range(0, len(data), chunk):
        reader.feed(data[i : i + chunk])
    reader.finish()
    return sink


# --- the generators are what they claim ------------------------------------------


def test_generated_records_are_valid_grants() -> None:
    for i in range(50):
        grant_from_mapping(grant_record(i))


def test_csv_and_ndjson_generators_describe_the_same_grants() -> None:
    records = [grant_record(i, source="feed") for i in range(40)]
    from_json = read_all("ndjson", ndjson_lines(records))
    from_csv = read_all("csv", csv_text(records))
    assert not from_json.rejected and not from_csv.rejected
    assert [g for _, g in from_json.grants] == [g for _, g in from_csv.grants]
    assert [line for line, _ in from_csv.grants] == list(range(2, 42))
