"""The import readers on their own (no database): formats, hostile input, streaming."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_import_helpers import CSV_HEADER, csv_text, grant_record, ndjson_lines, read_all

from entitlements.errors import InvalidInputError
from entitlements.service import import_formats
from entitlements.service.import_formats import MAX_LINE_BYTES, loads_strict, make_reader
from entitlements.service.strict_json import find_duplicate, surely_unique

G = b'{"id":"g1","subject":"*","resource":"track:t1","actions":["stream"],"territories":["*"]}\n'
H = CSV_HEADER.encode()
ROW = b"g1,*,track:t1,stream,GB,,,,,,\n"


def fatal(fmt: str, data: bytes, **kw: Any) -> tuple[int | None, str]:
    with pytest.raises(InvalidInputError) as caught:
        read_all(fmt, data, **kw)
    error = caught.value.errors[0]
    return error.line, error.message


def only_rejection(sink: Any) -> tuple[int, list[tuple[str, str]]]:
    assert len(sink.rejected) == 1, sink.rejected
    line, errors, _ = sink.rejected[0]
    return line, errors


# --- NDJSON ----------------------------------------------------------------------


def test_ndjson_grants_and_resources_with_kind() -> None:
    data = G + b'\n  \r\n{"kind":"resource","id":"track:t1","parents":["release:r1"]}\r\n'
    sink = read_all("ndjson", data)
    assert [line for line, _ in sink.grants] == [1]
    assert [(line, r.parents) for line, r in sink.resources] == [(4, ("release:r1",))]
    assert not sink.rejected


def test_ndjson_default_kind_resource_and_unknown_kind() -> None:
    data = b'{"id":"release:r1","parents":["label:a"]}\n{"kind":"deal","id":"x"}\n'
    sink = read_all("ndjson", data, kind="resource")
    assert [r.id for _, r in sink.resources] == ["release:r1"]
    assert only_rejection(sink) == (2, [("kind", "must be 'grant' or 'resource'")])


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 100, 4096, 1 << 20])
def test_any_chunk_size_gives_the_same_records(chunk: int) -> None:
    records = [grant_record(i) for i in range(30)]
    data = b"\xef\xbb\xbf" + ndjson_lines(records)
    sink = read_all("ndjson", data, chunk=chunk)
    assert [g.id for _, g in sink.grants] == [r["id"] for r in records]
    assert len(sink.notes) == 1
    csv_sink = read_all("csv", b"\xef\xbb\xbf" + csv_text(records), chunk=chunk)
    assert [g for _, g in csv_sink.grants] == [g for _, g in sink.grants]


def test_a_file_without_a_final_newline_keeps_its_last_record() -> None:
    assert len(read_all("ndjson", G + G.replace(b"g1", b"g2").rstrip()).grants) == 2
    assert len(read_all("csv", H + ROW.rstrip()).grants) == 1


def test_a_bad_record_is_rejected_with_its_line_and_field() -> None:
    bad = grant_record(1) | {"territories": ["GB", "XX"]}
    sink = read_all("ndjson", G + orjson.dumps(bad) + b"\n")
    line, errors = only_rejection(sink)
    assert line == 2 and errors[0][0] == "territories.1"


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (b'{"id":"a","id":"b","subject":"*"}', "id"),
        (b'{"id":"a","attributes":{"q":1,"q":2}}', "q"),
        (b'{"id":"a","attributes":{"x":{"q":1,"q":2}}}', "q"),
        (b'{"\\u0069d":"a","id":"b"}', "id"),
        (b'{"id" : "a", "id" : "b"}', "id"),
    ],
)
def test_duplicate_json_keys_are_refused(line: bytes, field: str) -> None:
    sink = read_all("ndjson", G + line + b"\n")
    assert only_rejection(sink) == (2, [(field, "duplicate key: JSON keys must be unique")])


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_refused(constant: bytes) -> None:
    sink = read_all("ndjson", G + b'{"id":"a","attributes":{"q":' + constant + b"}}\n")
    line, errors = only_rejection(sink)
    assert line == 2 and "NaN and Infinity are refused" in errors[0][1]


def test_invalid_json_and_non_objects_name_the_line() -> None:
    sink = read_all("ndjson", G + b'{"id": "a",\n[1, 2]\n"text"\n')
    assert [(line, errs[0][1][:14]) for line, errs, _ in sink.rejected] == [
        (2, "not valid JSON"),
        (3, "a record must "),
        (4, "a record must "),
    ]


def test_latin1_bytes_reject_the_record_naming_the_line() -> None:
    sink = read_all("ndjson", G + b'{"id":"caf\xe9"}\n' + G.replace(b"g1", b"g2"))
    line, errors = only_rejection(sink)
    assert line == 2 and "not valid UTF-8 (byte 0xE9" in errors[0][1]
    csv_sink = read_all("csv", H + ROW + b"g2,*,track:caf\xe9,stream,GB,,,,,,\n")
    line, errors = only_rejection(csv_sink)
    assert line == 3 and "not valid UTF-8" in errors[0][1]


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_utf16_is_refused_at_line_1(fmt: str) -> None:
    text = (H + ROW) if fmt == "csv" else G
    line, message = fatal(fmt, b"\xff\xfe" + text.decode().encode("utf-16-le"))
    assert line == 1 and "UTF-16" in message
    line, message = fatal(fmt, text.decode().encode("utf-16-le"))  # no byte-order mark
    assert line == 1 and "NUL byte" in message


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_a_nul_byte_stops_the_import_naming_the_line(fmt: str) -> None:
    good = (H + ROW) if fmt == "csv" else G + G
    line, message = fatal(fmt, good + b"g3,\x00\n")
    assert line == good.count(b"\n") + 1 and "NUL byte" in message


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_a_10_mb_line_stops_the_import_naming_it(fmt: str) -> None:
    good = (H + ROW) if fmt == "csv" else G
    line, message = fatal(fmt, good + b"x" * 10_000_000 + b"\n" + good, chunk=1 << 16)
    assert line == good.count(b"\n") + 1
    assert f"longer than {MAX_LINE_BYTES} bytes" in message


def test_a_long_line_is_refused_before_it_is_buffered() -> None:
    reader = make_reader("ndjson", read_all("ndjson", G))
    reader.feed(G)
    with pytest.raises(InvalidInputError):
        for _ in range(10_000):  # would be 640 MB; refused after ~64 KiB
            reader.feed(b"x" * 65536)
    assert len(reader._lines._tail) <= MAX_LINE_BYTES + 65536


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
@pytest.mark.parametrize("data", [b"", b"\n\n  \r\n", b"\xef\xbb\xbf"])
def test_an_empty_file_is_refused(fmt: str, data: bytes) -> None:
    line, message = fatal(fmt, data)
    assert line is None and "empty" in message


def test_a_header_only_csv_is_refused() -> None:
    assert fatal("csv", H) == (1, "the file has a header row but no rows")
    assert fatal("csv", b"\n" + H + b"\n") == (2, "the file has a header row but no rows")


# --- CSV -------------------------------------------------------------------------


def test_csv_lists_empty_cells_and_attributes() -> None:
    data = (
        b"id,subject,resource,actions,territories,exclude_territories,attributes,effect\n"
        b'g1,role:plan:premium,track:t1,stream; download,*,DE;FR,"{""q"": ""hifi""}",\n'
    )
    ((line, grant),) = read_all("csv", data).grants
    assert line == 2
    assert grant.actions == {"stream", "download"}
    assert grant.exclude_territories == {"DE", "FR"}
    assert grant.attributes == {"q": "hifi"}
    assert grant.effect == "allow" and grant.valid_from is None


def test_csv_resources_with_kind_resource() -> None:
    data = b"id,parents\ntrack:t1,release:r1;release:r2\nrelease:r1,\n"
    sink = read_all("csv", data, kind="resource")
    assert [(r.id, r.parents) for _, r in sink.resources] == [
        ("track:t1", ("release:r1", "release:r2")),
        ("release:r1", ()),
    ]


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (b"id,subject,resource,actions,territories,parents\n", "unknown column 'parents'"),
        (b"id,subject,resource,actions,territories,id\n", "names the column 'id' twice"),
        (b"id,subject,resource,actions\n", "lacks the required column(s) territories"),
    ],
)
def test_a_bad_header_stops_the_import_at_its_line(header: bytes, problem: str) -> None:
    line, message = fatal("csv", header + ROW)
    assert line == 1 and problem in message


def test_ragged_rows_are_rejected_naming_the_line() -> None:
    sink = read_all("csv", H + b"g1,*,track:t1,stream,GB\n" + ROW + b"g3,*,x,y,z,,,,,,,,\n")
    assert [(line, errs[0][1]) for line, errs, _ in sink.rejected] == [
        (2, "has 5 cells but the header has 11"),
        (4, "has 13 cells but the header has 11"),
    ]


@pytest.mark.parametrize(
    "formula", ['=HYPERLINK("http://evil","x")', "+1", "-1+2", "@SUM(A1)", "\t=1"]
)
def test_spreadsheet_formula_cells_are_refused(formula: str) -> None:
    cell = '"' + formula.replace('"', '""') + '"'
    sink = read_all("csv", H + f"g1,*,track:t1,stream,{cell},,,,,,\n".encode())
    line, errors = only_rejection(sink)
    assert line == 2 and errors[0][0] == "territories"
    assert "formula (CSV injection)" in errors[0][1]


def test_an_unbalanced_quote_stops_the_import_where_it_opened() -> None:
    line, message = fatal("csv", H + ROW + b'g2,*,"track:t2,stream,GB,,,,,,\n' + ROW * 3)
    assert line == 3 and "unbalanced quote" in message


def test_an_unbalanced_quote_mid_file_is_caught_within_the_line_limit() -> None:
    rows = b"".join(f"g{i},*,track:t,stream,GB,,,,,,\n".encode() for i in range(20_000))
    data = H + b'bad,*,"track:t,stream,GB,,,,,,\n' + rows
    reader = make_reader("csv", read_all("csv", H + ROW))
    with pytest.raises(InvalidInputError) as caught:
        for i in range(0, len(data), 4096):
            reader.feed(data[i : i + 4096])
    assert caught.value.errors[0].line == 2
    assert "unbalanced quote" in caught.value.errors[0].message


def test_a_stray_quote_in_an_unquoted_cell_is_rejected() -> None:
    sink = read_all("csv", H + b'g1,*,track:t1,str"eam,GB,,,,,,\n' + b'g2,*,x"y,a,b,,,,,,\n' + ROW)
    line, errors = only_rejection(sink)
    assert line == 2 and "quote" in errors[0][1]


def test_quoted_cells_may_span_lines() -> None:
    # A cell may hold a newline (RFC 4180); the record keeps its first line's number,
    # and the next record's line number counts the physical lines.
    data = H + b'g1,*,"track:\nt1",stream,GB,,,,,,\n' + ROW.replace(b"g1", b"g2")
    sink = read_all("csv", data)
    assert [line for line, _ in sink.grants] == [4]
    line, errors = only_rejection(sink)
    assert line == 2 and errors[0][0] == "resource"


def test_csv_attributes_are_strict_json() -> None:
    data = H + b'g1,*,track:t1,stream,GB,,,,,"{""q"":1,""q"":2}",\n'
    assert only_rejection(read_all("csv", data)) == (
        2,
        [("attributes", "q: duplicate key: JSON keys must be unique")],
    )


# --- replace_source ----------------------------------------------------------------


def test_replace_source_fills_in_the_source_and_refuses_another() -> None:
    other = grant_record(2) | {"source": "other-feed"}
    same = grant_record(3) | {"source": "feed-a"}
    data = G + orjson.dumps(other) + b"\n" + orjson.dumps(same) + b"\n"
    sink = read_all("ndjson", data, replace_source="feed-a")
    assert [g.source for _, g in sink.grants] == ["feed-a", "feed-a"]
    line, errors = only_rejection(sink)
    assert line == 2 and errors[0][0] == "source"


# --- properties: the shortcuts agree with the slow, obvious way ---------------------

cell = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters='"\r\n\x00'),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(cell, min_size=1, max_size=6))
def test_the_fast_csv_split_matches_the_csv_module(cells: list[str]) -> None:
    line = ",".join(cells)
    header = ",".join(f"c{i}" for i in range(len(cells)))
    parsed = next(csv.reader([line + "\n"], strict=True), [])
    reader = import_formats.CsvReader(
        read_all("ndjson", G), kind="grant", replace_source=None, max_line=MAX_LINE_BYTES
    )
    seen: list[list[str]] = []
    reader._row = lambda line, cells: seen.append(cells)  # type: ignore[method-assign]
    reader.header = tuple(header.split(","))
    reader._record(2, (line.encode(),))
    blank = not line or line.isspace()  # blank lines are skipped, whatever csv makes of them
    assert seen == ([] if blank or not parsed else [parsed])


# JSON texts built from pair lists, so an object may repeat a key (as a hostile file can).
keys = st.sampled_from(["id", "subject", "source", "q", "x", "attributes", 'a"b'])
scalars = st.one_of(st.integers(-5, 5), st.sampled_from(["id", "a", 'q"', "\\", "x"]), st.none())
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(st.tuples(keys, inner), max_size=4).map(lambda pairs: ("obj", pairs)),
    ),
    max_leaves=12,
)


def dump(value: Any, comma: str = ",", colon: str = ":") -> str:
    if isinstance(value, tuple):
        items = (json.dumps(k) + colon + dump(v, comma, colon) for k, v in value[1])
        return "{" + comma.join(items) + "}"
    if isinstance(value, list):
        return "[" + comma.join(dump(v, comma, colon) for v in value) + "]"
    return json.dumps(value)


def repeats(value: Any) -> bool:
    """Whether any object in ``value`` repeats a key."""
    if isinstance(value, tuple):
        names = [k for k, _ in value[1]]
        return len(set(names)) < len(names) or any(repeats(v) for _, v in value[1])
    if isinstance(value, list):
        return any(repeats(v) for v in value)
    return False


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.tuples(keys, trees), max_size=5),
    st.sampled_from([(",", ":"), (", ", ": "), (",", " :"), (",\t", ":\t"), (" ,", "\r:")]),
)
def test_the_duplicate_key_shortcut_never_misses_one(
    pairs: list[tuple[str, Any]], separators: tuple[str, str]
) -> None:
    raw = dump(("obj", pairs), *separators).encode()
    parsed = orjson.loads(raw)
    # Whatever it vouches for has no repeated key at any depth.
    if surely_unique(raw, parsed, "attributes"):
        assert not repeats(("obj", pairs)), raw
    assert (find_duplicate(raw) is not None) == repeats(("obj", pairs))


def test_the_duplicate_key_shortcut_vouches_for_ordinary_rows() -> None:
    """The cheap proofs do take the rows feeds are made of (else every row pays the exact one)."""
    row = {
        "id": "g1",
        "subject": "*",
        "resource": "track:t",
        "actions": ["stream"],
        "territories": ["GB"],
        "attributes": {"q": "hifi", "n": 2},
    }
    compact = orjson.dumps(row)
    spaced = json.dumps(row).encode()  # Python's default ", " and ": "
    assert surely_unique(compact, orjson.loads(compact), "attributes")
    assert surely_unique(spaced, orjson.loads(spaced), "attributes")
    twice = spaced.replace(b'"subject": "*"', b'"subject": "*", "subject" : "*"')
    assert not surely_unique(twice, orjson.loads(twice), "attributes")


def test_loads_strict_refuses_duplicates_nan_and_accepts_plain_json() -> None:
    assert loads_strict('{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    with pytest.raises(InvalidInputError):
        loads_strict('{"a": {"b": 1, "b": 2}}')
    with pytest.raises(InvalidInputError):
        loads_strict('{"a": NaN}')


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        # The readers are pure: no driver, no framework, no HTTP client.
        (
            "entitlements.service.import_formats",
            {"asyncpg", "fastapi", "starlette", "redis", "httpx"},
        ),
        # The import use case may reach the store (asyncpg), never the web framework.
        ("entitlements.service.imports", {"fastapi", "starlette", "redis", "uvicorn"}),
    ],
)
def test_the_import_layers_stay_clean(module: str, forbidden: set[str]) -> None:
    code = (
        f"import sys, {module}\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(forbidden)!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
