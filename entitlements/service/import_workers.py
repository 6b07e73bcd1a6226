"""Reading an NDJSON import in worker processes: the per-row Python runs in parallel.

Decoding, validating and rendering a row is a few microseconds of pure Python,
and one interpreter runs it on one core at a time. For a large NDJSON file the
import cuts the stream at line ends into segments and hands each to a process
of a small pool; every segment comes back as the rows the in-process reader
would have produced (``ImportRun``'s staged rows, rejects with their lines, notes),
and the import applies them strictly in file order. So the report, the
duplicate checks and all-or-nothing are those of the in-process path; only the
work is spread.

The workers are started with ``spawn`` (safe from a threaded server process),
as soon as the import starts, so they boot while it connects and locks. They
ignore Ctrl-C (the import decides) and, on Linux, are killed by the kernel when
the importing process dies (``PR_SET_PDEATHSIG``), so a SIGKILLed import leaves
no orphans behind. (Not ``forkserver``: its workers hold the fork server's and
each other's pipes open, so neither notices the importing process die.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from entitlements.domain.model import GrantRow, Resource
from entitlements.errors import FieldError, InvalidInputError
from entitlements.service.import_formats import Kind, NdjsonReader
from entitlements.store.import_rows import GrantRows, ResourceRow, change_key, copy_text

SEGMENT_BYTES: Final = 1 << 20
"""About how much of the file one worker task reads (cut at a line end)."""

_PR_SET_PDEATHSIG: Final = 1


@dataclass(slots=True)
class Segment:
    """What a worker read from one segment, in file order, with absolute line numbers."""

    records: int = 0
    valid_grants: int = 0
    grants: GrantRows = field(default_factory=GrantRows)
    resources: list[ResourceRow] = field(default_factory=list)
    rejects: list[tuple[int, list[FieldError]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fatal: list[FieldError] | None = None  # the segment stops the import


class _SegmentSink:
    """The ``RecordSink`` of a worker: ``ImportRun``'s bookkeeping, minus the database."""

    def __init__(self, out: Segment, tail: str, keys: bool, skip_invalid: bool) -> None:
        self.out = out
        self.tail = tail
        self.keys = keys
        self.skip_invalid = skip_invalid

    def grant(self, line: int, row: GrantRow) -> None:
        self.out.valid_grants += 1
        key = change_key(row[1], row[2]) if self.keys else None
        self.out.grants.add(row[0], line, copy_text(row, self.tail), key)

    def resource(self, line: int, resource: Resource) -> None:
        self.out.resources.append((resource.id, list(resource.parents), line, True))

    def reject(
        self, line: int, errors: Sequence[FieldError], record_id: str | None, kind: Kind
    ) -> None:
        self.out.rejects.append((line, list(errors)))
        if self.skip_invalid and record_id is not None and kind == "grant":
            self.out.grants.add(record_id, line, None, None)

    def note(self, message: str) -> None:
        self.out.notes.append(message)


def read_segment(
    data: bytes,
    first_line: int,
    *,
    kind: Kind,
    replace_source: str | None,
    max_line: int,
    tail: str,
    keys: bool,
    skip_invalid: bool,
) -> Segment:
    """Read one segment of whole NDJSON lines (runs in a worker process)."""
    out = Segment()
    sink = _SegmentSink(out, tail, keys, skip_invalid)
    reader = NdjsonReader(sink, kind=kind, replace_source=replace_source, max_line=max_line)
    reader.start_at(first_line)
    try:
        reader.feed(data)
        reader.flush()
    except InvalidInputError as exc:
        out.fatal = list(exc.errors)
    out.records = reader.records
    return out


def _worker_init(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the importing process died before prctl took hold
            os._exit(1)


def _ready() -> bool:
    return True


class ReadWorkers:
    """A pool of reader processes for one import."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(os.getpid(),),
        )

    def start(self) -> None:
        """Start every worker now (they take a moment to boot), without waiting for them."""
        for _ in range(self.processes):
            self._pool.submit(_ready)

    def read(self, data: bytes, first_line: int, **options: Any) -> asyncio.Future[Segment]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(
            self._pool, _call_read_segment, data, first_line, tuple(sorted(options.items()))
        )

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, True, cancel_futures=True)


def _call_read_segment(
    data: bytes, first_line: int, options: tuple[tuple[str, Any], ...]
) -> Segment:
    return read_segment(data, first_line, **dict(options))


__all__ = ["SEGMENT_BYTES", "ReadWorkers", "Segment", "read_segment"]
