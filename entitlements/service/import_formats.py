"""Streaming readers for bulk-import files: bytes in, validated records or row errors out.

Two formats, both read incrementally from chunks of any size (a file read in
blocks, or an HTTP body as it arrives), so memory stays flat whatever the
file size:

- **NDJSON**: one JSON object per line. ``"kind": "grant"`` (the default, or
  ``--kind``) or ``"kind": "resource"``; blank lines are ignored.
- **CSV** (RFC 4180, comma-separated): a header row naming the columns, then one
  grant (or, with ``--kind resource``, one resource) per row. An empty cell is
  an absent field; list fields (``actions``, ``territories``,
  ``exclude_territories``, ``parents``) are ``;``-separated, with spaces around
  items ignored; ``attributes`` is a JSON object in one cell.

Every record goes through the API's one validator (``grant_row_from_mapping``:
``grant_from_mapping`` giving the store's row; ``resource_from_mapping``); this
module only decodes the file into the mapping the API would have received.

Decisions about hostile input (each refusal names the line):

- The file must be UTF-8. A UTF-8 byte-order mark at the very start (Excel's
  "CSV UTF-8") is stripped and noted in the report; a UTF-16/UTF-32 mark, a
  NUL byte or a line longer than ``max_line`` bytes stops the whole import
  (the file is not the text it claims to be, or a line cannot be held in
  bounded memory). Invalid UTF-8 inside one record rejects that record.
- CSV: an unbalanced quote stops the import (every later row would be read
  wrongly); a ragged row, a stray quote inside an unquoted cell, or a cell
  starting with ``=``, ``+``, ``-``, ``@``, tab or CR (a spreadsheet formula:
  CSV injection) rejects that row. No valid value starts with those
  characters, so refusing them loses nothing.
- JSON (NDJSON lines and CSV ``attributes`` cells): duplicate keys and
  ``NaN``/``Infinity`` are refused, not silently resolved (``strict_json``). A record nested
  deeper than any valid one (``attributes`` nest at most 32 levels) is refused
  naming its field, without handing it to a recursive parser.
- An empty file, or a CSV file with a header and no rows, is refused.

Fatal problems raise ``InvalidInputError`` whose ``FieldError`` carries the
line; row problems go to ``RecordSink.reject`` and the import decides (fail,
or skip with ``--skip-invalid``).
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Any, Final, Literal, Protocol

import orjson

from entitlements.domain.model import (
    GRANT_FIELDS,
    GrantRow,
    Resource,
    grant_row_from_mapping,
    parse_grant_id,
    resource_from_mapping,
)
from entitlements.domain.values import brief, shown
from entitlements.errors import FieldError, InvalidInputError
from entitlements.service.strict_json import encoding_problem, json_problem, loads_strict
from entitlements.service.strict_json import find_duplicate as _find_duplicate
from entitlements.service.strict_json import surely_unique as _surely_unique

Format = Literal["ndjson", "csv"]
Kind = Literal["grant", "resource"]

MAX_LINE_BYTES: Final = 64 * 1024
"""The longest line (CSV: record) accepted; longer ones stop the import, naming the line."""

FORMULA_PREFIXES: Final = frozenset("=+-@\t\r")
"""First characters that make a spreadsheet evaluate a cell (OWASP "CSV injection")."""

LIST_SEPARATOR: Final = ";"
GRANT_LIST_FIELDS: Final = frozenset({"actions", "territories", "exclude_territories"})
GRANT_REQUIRED: Final = ("id", "subject", "resource", "actions", "territories")
RESOURCE_FIELDS: Final = frozenset({"id", "parents"})

_UTF8_BOM: Final = b"\xef\xbb\xbf"
_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")


class RecordSink(Protocol):
    """Where a reader puts what it read (the import service batches it for COPY)."""

    def grant(self, line: int, row: GrantRow) -> None:
        """A valid grant, in the store's normal form (``grant_row``)."""
        ...

    def resource(self, line: int, resource: Resource) -> None: ...

    def reject(
        self, line: int, errors: Sequence[FieldError], record_id: str | None, kind: Kind
    ) -> None:
        """A record that failed; ``record_id`` is its grant id when one could be read."""
        ...

    def note(self, message: str) -> None: ...


def fatal(line: int | None, message: str, field: str = "") -> InvalidInputError:
    """An error that stops the whole import, naming where."""
    return InvalidInputError(FieldError(field, message, line))


# --- physical lines -----------------------------------------------------------


def strip_bom(head: bytes, sink: RecordSink) -> bytes:
    """The first bytes of a file (at least 3, or all of it) without a UTF-8 byte-order
    mark, noted; a UTF-16 or UTF-32 mark stops the import."""
    if head.startswith(_UTF8_BOM):
        sink.note("a UTF-8 byte-order mark at the start of the file was ignored")
        return head[len(_UTF8_BOM) :]
    if head.startswith(_UTF16_BOMS):
        raise fatal(
            1,
            "the file is UTF-16 or UTF-32 (it starts with a byte-order mark): save it as UTF-8",
        )
    return head


class _LineSplitter:
    """Cuts a byte stream into ``\\n``-terminated lines, refusing what cannot be text.

    Holds at most one partial line (bounded by ``max_line``) between chunks.
    """

    def __init__(self, sink: RecordSink, max_line: int) -> None:
        self.sink = sink
        self.max_line = max_line
        self.lines = 0  # complete lines handed out so far
        self._tail = b""
        self._head: bytes | None = b""  # the first bytes, until the BOM question is settled

    @property
    def at_start(self) -> bool:
        return self._head is not None

    @at_start.setter
    def at_start(self, value: bool) -> None:
        self._head = b"" if value else None

    def feed(self, chunk: bytes) -> tuple[int, list[bytes]] | None:
        if self._head is not None:
            self._head += chunk
            if len(self._head) < len(_UTF8_BOM):
                return None
            chunk, self._head = self._start(self._head), None
        data = self._tail + chunk if self._tail else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._tail = data
            if len(data) > self.max_line:
                raise self._too_long(self.lines + 1)
            return None
        self._tail = data[cut + 1 :]
        lines = data[:cut].split(b"\n")
        self._check(lines, data, cut)
        if len(self._tail) > self.max_line:
            raise self._too_long(self.lines + len(lines) + 1)
        first = self.lines + 1
        self.lines += len(lines)
        return first, lines

    def finish(self) -> tuple[int, list[bytes]] | None:
        data, self._tail = self._tail, b""
        if self._head is not None:
            data, self._head = self._start(self._head), None
        if not data:
            return None
        lines = data.split(b"\n")
        if not lines[-1]:
            lines.pop()
        self._check(lines, data, len(data))
        first = self.lines + 1
        self.lines += len(lines)
        return first, lines

    def _start(self, head: bytes) -> bytes:
        return strip_bom(head, self.sink)

    def _check(self, lines: list[bytes], data: bytes, end: int) -> None:
        nul = data.find(b"\x00", 0, end)
        if nul >= 0:
            line = self.lines + data.count(b"\n", 0, nul) + 1
            raise fatal(
                line,
                "contains a NUL byte: the file looks binary or UTF-16; it must be UTF-8 text",
            )
        if max(map(len, lines)) > self.max_line:
            for offset, item in enumerate(lines, 1):
                if len(item) > self.max_line:
                    raise self._too_long(self.lines + offset)

    def _too_long(self, line: int) -> InvalidInputError:
        return too_long(line, self.max_line)


def too_long(line: int, max_line: int) -> InvalidInputError:
    """Line ``line`` is longer than ``max_line`` bytes: the import stops."""
    return fatal(
        line, f"the line is longer than {max_line} bytes; is this the right file and format?"
    )


def no_records() -> InvalidInputError:
    """An NDJSON file (or upload) without a single record."""
    return fatal(None, "the file has no records (it is empty)")


# --- records --------------------------------------------------------------------


class _Records:
    """What NDJSON and CSV share: turning a mapping into a validated grant or resource."""

    def __init__(
        self, sink: RecordSink, *, kind: Kind, replace_source: str | None, max_line: int
    ) -> None:
        self.sink = sink
        self.kind: Kind = kind
        self.replace_source = replace_source
        self.records = 0
        self._lines = _LineSplitter(sink, max_line)

    def feed(self, chunk: bytes) -> None:
        """Read the complete lines in ``chunk``; a partial last line waits for the next."""
        got = self._lines.feed(chunk)
        if got is not None:
            self._parse(*got)

    def finish(self) -> None:
        """End of input: read what is left and refuse a file without records."""
        self.flush()
        self._end()

    def flush(self) -> None:
        """Read a last line that has no newline (``finish`` without the end-of-file checks)."""
        got = self._lines.finish()
        if got is not None:
            self._parse(*got)

    def start_at(self, first_line: int) -> None:
        """Read a part of a file whose first line is ``first_line`` (a worker's segment):
        lines are numbered from there, and no byte-order mark is looked for."""
        self._lines.lines = first_line - 1
        self._lines.at_start = False

    def _parse(self, first: int, lines: list[bytes]) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        if self.records == 0:
            raise no_records()

    def _emit(self, line: int, data: dict[str, Any], kind: object) -> None:
        sink = self.sink
        if kind == "grant":
            source = self.replace_source
            if source is not None:
                own = data.get("source")
                if own is None:
                    data["source"] = source
                elif own != source:
                    sink.reject(
                        line,
                        (
                            FieldError(
                                "source",
                                f"is {brief(own, 100)}, but this import replaces source {source!r}",
                            ),
                        ),
                        _grant_id(data),
                        "grant",
                    )
                    return
            try:
                row = grant_row_from_mapping(data)
            except InvalidInputError as exc:
                sink.reject(line, exc.errors, _grant_id(data), "grant")
                return
            sink.grant(line, row)
        elif kind == "resource":
            try:
                resource = resource_from_mapping(data)
            except InvalidInputError as exc:
                sink.reject(line, exc.errors, None, "resource")
                return
            sink.resource(line, resource)
        else:
            sink.reject(
                line, (FieldError("kind", "must be 'grant' or 'resource'"),), None, self.kind
            )


def _grant_id(data: dict[str, Any]) -> str | None:
    """A rejected record's grant id, if it is a valid one. (With ``--skip-invalid`` the
    import stages it to notice a later duplicate and keep it from a replace-source
    delete; an invalid id can be neither, and Postgres might not even hold it.)"""
    try:
        return parse_grant_id(data.get("id"))
    except InvalidInputError:
        return None


class NdjsonReader(_Records):
    """NDJSON: one JSON object per line; ``kind`` picks grant or resource (default ``kind``)."""

    def _parse(self, first: int, lines: list[bytes]) -> None:
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        sink = self.sink
        default = self.kind
        for line, raw in enumerate(lines, first):
            if not raw or raw.isspace():
                continue
            self.records += 1
            try:
                obj = loads(raw)
            except decode_error as exc:
                sink.reject(line, (json_problem(raw, exc),), None, default)
                continue
            if type(obj) is not dict:
                sink.reject(
                    line, (FieldError("", "a record must be a JSON object"),), None, default
                )
                continue
            if not _surely_unique(raw, obj, "attributes"):
                duplicate = _find_duplicate(raw)
                if duplicate is not None:
                    sink.reject(line, (duplicate,), _grant_id(obj), default)
                    continue
            self._emit(line, obj, obj.pop("kind", default))


class CsvReader(_Records):
    """CSV with a header row: grants, or resources with ``kind="resource"``.

    Records are delimited here, not by the ``csv`` module: a line whose quote
    count leaves a quoted field open continues on the next line (RFC 4180), so
    each record is known with its first line before it is parsed, and an
    unbalanced quote is caught within ``max_line`` bytes instead of swallowing
    the rest of the file.
    """

    def __init__(
        self, sink: RecordSink, *, kind: Kind, replace_source: str | None, max_line: int
    ) -> None:
        super().__init__(sink, kind=kind, replace_source=replace_source, max_line=max_line)
        self.max_line = max_line
        self.header: tuple[str, ...] | None = None
        self.header_line = 0
        self._lists = GRANT_LIST_FIELDS if kind == "grant" else frozenset({"parents"})
        self._open: list[bytes] = []  # lines of a record whose quoted field is still open
        self._open_line = 0
        self._open_bytes = 0

    def _parse(self, first: int, lines: list[bytes]) -> None:
        for line, raw in enumerate(lines, first):
            quotes = raw.count(b'"')
            if self._open:
                self._open.append(raw)
                self._open_bytes += len(raw) + 1
                if quotes % 2:
                    record, self._open = self._open, []
                    self._record(self._open_line, record)
                elif self._open_bytes > self.max_line:
                    raise self._unbalanced()
            elif quotes % 2:
                self._open, self._open_line, self._open_bytes = [raw], line, len(raw) + 1
            else:
                self._record(line, (raw,))

    def _end(self) -> None:
        if self._open:
            raise self._unbalanced()
        if self.header is None:
            raise fatal(None, "the file is empty: a CSV import needs a header row and rows")
        if self.records == 0:
            raise fatal(self.header_line, "the file has a header row but no rows")

    def _unbalanced(self) -> InvalidInputError:
        return fatal(
            self._open_line,
            "a quoted field opened on this line is never closed (unbalanced quote)",
        )

    def _record(self, line: int, raws: Sequence[bytes]) -> None:
        try:
            texts = [raw.decode("utf-8") for raw in raws]
        except UnicodeDecodeError as exc:
            if self.header is None:
                raise fatal(line, encoding_problem(exc).message) from None
            self.records += 1
            self.sink.reject(line, (encoding_problem(exc),), None, self.kind)
            return
        if len(texts) == 1:
            text = texts[0]
            if text.endswith("\r"):
                text = text[:-1]
            if not text or text.isspace():
                return  # a blank line between records
            if '"' not in text and "\r" not in text:
                # Without quotes (or a stray CR, which csv refuses) a CSV line is its
                # comma-split: the same cells csv.reader gives, much cheaper.
                self._row(line, text.split(","))
                return
        try:
            rows = list(csv.reader([t + "\n" for t in texts], strict=True))
        except csv.Error as exc:
            self._malformed(line, f"is not valid CSV: {exc}")
            return
        if len(rows) != 1:
            self._malformed(
                line,
                'a quote (") inside an unquoted cell: quote the whole cell and double the quote',
            )
            return
        if rows[0]:
            self._row(line, rows[0])

    def _malformed(self, line: int, message: str) -> None:
        if self.header is None:
            raise fatal(line, f"the header row {message}")
        self.records += 1
        self.sink.reject(line, (FieldError("", message),), None, self.kind)

    def _row(self, line: int, cells: list[str]) -> None:
        header = self.header
        if header is None:
            self.header, self.header_line = self._read_header(line, cells), line
            return
        self.records += 1
        if len(cells) != len(header):
            self.sink.reject(
                line,
                (FieldError("", f"has {len(cells)} cells but the header has {len(header)}"),),
                None,
                self.kind,
            )
            return
        data: dict[str, Any] = {}
        errors: list[FieldError] = []
        lists = self._lists
        for name, cell in zip(header, cells, strict=True):
            if not cell:
                continue
            if cell[0] in FORMULA_PREFIXES:
                errors.append(
                    FieldError(
                        name,
                        f"starts with {cell[0]!r}, which makes spreadsheets run it as a formula"
                        " (CSV injection); formula cells are refused",
                    )
                )
            elif name in lists:
                data[name] = [item.strip() for item in cell.split(LIST_SEPARATOR)]
            elif name == "attributes":
                try:
                    data[name] = loads_strict(cell)
                except InvalidInputError as exc:
                    errors.extend(
                        FieldError("attributes", f"{e.field + ': ' if e.field else ''}{e.message}")
                        for e in exc.errors
                    )
            else:
                data[name] = cell
        if errors:
            self.sink.reject(line, errors, _grant_id(data), self.kind)
            return
        self._emit(line, data, self.kind)

    def _read_header(self, line: int, cells: list[str]) -> tuple[str, ...]:
        names = tuple(c.strip() for c in cells)
        known = GRANT_FIELDS if self.kind == "grant" else RESOURCE_FIELDS
        required = GRANT_REQUIRED if self.kind == "grant" else ("id",)
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise fatal(line, f"the header names the column {name!r} twice", shown(name))
            seen.add(name)
            if name not in known:
                hint = " (for resources use --kind resource)" if name == "parents" else ""
                raise fatal(
                    line,
                    f"the header has an unknown column {name[:64]!r}{hint}; known columns:"
                    f" {', '.join(sorted(known))}",
                    shown(name),
                )
        missing = [name for name in required if name not in seen]
        if missing:
            raise fatal(line, f"the header lacks the required column(s) {', '.join(missing)}")
        return names


async def read_file(path: str, chunk_size: int = 1 << 18) -> AsyncIterator[bytes]:
    """A file as an async stream of chunks (local reads are fast enough to do inline)."""
    with open(path, "rb") as f:  # noqa: ASYNC230 - a local file read per chunk, by design
        while chunk := f.read(chunk_size):
            yield chunk


async def guarded(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The input, with a failure to read it reported as the input's problem."""
    iterator = aiter(chunks)
    while True:
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except OSError as exc:
            raise fatal(None, f"reading the input failed: {exc}") from exc
        if chunk:
            yield chunk


def make_reader(
    format: Format,
    sink: RecordSink,
    *,
    kind: Kind = "grant",
    replace_source: str | None = None,
    max_line: int = MAX_LINE_BYTES,
) -> NdjsonReader | CsvReader:
    """The reader for ``format``; feed it chunks, then call ``finish()``."""
    if format == "ndjson":
        return NdjsonReader(sink, kind=kind, replace_source=replace_source, max_line=max_line)
    if format == "csv":
        return CsvReader(sink, kind=kind, replace_source=replace_source, max_line=max_line)
    raise InvalidInputError(FieldError("format", "must be 'csv' or 'ndjson'"))


__all__ = [
    "FORMULA_PREFIXES",
    "MAX_LINE_BYTES",
    "CsvReader",
    "Format",
    "Kind",
    "NdjsonReader",
    "RecordSink",
    "fatal",
    "guarded",
    "loads_strict",
    "make_reader",
    "no_records",
    "read_file",
    "strip_bom",
    "too_long",
]
