"""Hostile and broken ERN messages: each is a clear error naming what is wrong, never a crash.

Also: a 100 MB message of descriptive metadata is read in flat memory (peak RSS
growth measured in a fresh interpreter).
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ddex_support import Deal, Recording, Release, ern
from lxml import etree

from entitlements.ddex import read_message
from entitlements.ddex.stream import MAX_CHILDREN, MAX_TEXT, _root
from entitlements.errors import InvalidInputError

HERE = Path(__file__).parent / "ddex"
ROOT = '<ern:NewReleaseMessage xmlns:ern="http://ddex.net/xml/ern/43" LanguageAndScriptCode="en">'
VALID = (HERE / "ern43_album.xml").read_bytes()


def refused(data: bytes) -> list[tuple[str, str, int | None]]:
    with pytest.raises(InvalidInputError) as caught:
        read_message(io.BytesIO(data), name="evil.xml")
    return [(e.field, e.message, e.line) for e in caught.value.errors]


@pytest.fixture
def listener() -> Iterator[tuple[str, socket.socket]]:
    """A local TCP port that records whether anything connected (XXE/DTD over the network)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.setblocking(False)
    yield f"http://127.0.0.1:{server.getsockname()[1]}", server
    server.close()


def nobody_connected(server: socket.socket) -> bool:
    time.sleep(0.2)
    try:
        server.accept()
    except BlockingIOError:
        return True
    return False


def with_doctype(
    doctype: str, body: str = "<MessageHeader><MessageId>&xxe;</MessageId></MessageHeader>"
) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}\n{ROOT}{body}</ern:NewReleaseMessage>'.encode()


DOCTYPE_REFUSED = "has a DOCTYPE declaration; DTDs and entities are not allowed"


def test_xxe_reading_a_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    data = with_doctype(
        f'<!DOCTYPE ern:NewReleaseMessage [<!ENTITY xxe SYSTEM "file://{secret}">]>'
    )
    ((field, message, line),) = refused(data)
    assert field == "evil.xml" and message.startswith(DOCTYPE_REFUSED) and line == 2
    assert "TOP-SECRET" not in message


def test_xxe_over_the_network_is_refused_without_connecting(
    listener: tuple[str, socket.socket],
) -> None:
    url, server = listener
    data = with_doctype(f'<!DOCTYPE ern:NewReleaseMessage [<!ENTITY xxe SYSTEM "{url}/steal">]>')
    ((_, message, _),) = refused(data)
    assert message.startswith(DOCTYPE_REFUSED)
    assert nobody_connected(server)


def test_an_external_dtd_is_refused_without_fetching_it(
    listener: tuple[str, socket.socket],
) -> None:
    url, server = listener
    data = with_doctype(
        f'<!DOCTYPE ern:NewReleaseMessage SYSTEM "{url}/ern.dtd">', "<MessageHeader/>"
    )
    ((_, message, _),) = refused(data)
    assert message.startswith(DOCTYPE_REFUSED)
    parameter = with_doctype(
        f'<!DOCTYPE x [<!ENTITY % remote SYSTEM "{url}/p.dtd"> %remote;]>', "<MessageHeader/>"
    )
    assert refused(parameter)[0][1].startswith(DOCTYPE_REFUSED)
    assert nobody_connected(server)


def test_billion_laughs_is_refused_at_once() -> None:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    data = with_doctype(
        f"<!DOCTYPE lolz [{''.join(entities)}]>",
        "<MessageHeader><MessageId>&lol9;</MessageId></MessageHeader>",
    )
    started = time.perf_counter()
    ((_, message, _),) = refused(data)
    assert message.startswith(DOCTYPE_REFUSED) and time.perf_counter() - started < 1


@pytest.mark.parametrize(
    "prefix",
    [
        "<!-- a comment first --><!DOCTYPE x>",
        '<?xml version="1.0"?><?pi x?>\n\n   <!DOCTYPE x>',
        "\ufeff<!DOCTYPE x>",
    ],
)
def test_a_doctype_after_comments_or_a_bom_is_refused(prefix: str) -> None:
    data = (prefix + ROOT + "<MessageHeader/></ern:NewReleaseMessage>").encode()
    assert refused(data)[0][1].startswith(DOCTYPE_REFUSED)


def test_a_doctype_in_utf16_is_refused() -> None:
    text = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY e "e">]>' + ROOT
    data = (text + "<MessageHeader/></ern:NewReleaseMessage>").encode("utf-16")
    assert refused(data)[0][1].startswith(DOCTYPE_REFUSED)


def test_the_root_check_refuses_a_doctype_lxml_saw() -> None:
    """Second line of defence: were a DOCTYPE to pass the prolog scan, the root refuses it."""
    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True)
    element = etree.fromstring(
        b'<!DOCTYPE x><ern:NewReleaseMessage xmlns:ern="http://ddex.net/xml/ern/43"/>', parser
    )
    with pytest.raises(InvalidInputError, match="DOCTYPE"):
        _root(element, "evil.xml")


def test_an_undefined_entity_is_refused() -> None:
    data = (
        ROOT + "<MessageHeader><MessageId>&xxe;</MessageId></MessageHeader></ern:NewReleaseMessage>"
    ).encode()
    assert refused(data) == [("evil.xml", "is not well-formed XML: Entity 'xxe' not defined", 1)]


@pytest.mark.parametrize(
    ("data", "field", "text"),
    [
        (
            b"<NewReleaseMessage><MessageHeader/></NewReleaseMessage>",
            "evil.xml:NewReleaseMessage",
            "no namespace",
        ),
        (
            b'<ern:NewReleaseMessage xmlns:ern="http://ddex.net/xml/ern/383"/>',
            "evil.xml:NewReleaseMessage",
            "'http://ddex.net/xml/ern/383', not an ERN 3.4.1-3.8.2 or 4.1-4.3 namespace",
        ),
        (
            b'<ern:NewReleaseMessage xmlns:ern="http://ddex.net/xml/ern/33"/>',
            "evil.xml:NewReleaseMessage",
            "not an ERN",
        ),
        (
            b'<ern:NewReleaseMessage xmlns:ern="https://ddex.net/xml/ern/43"/>',
            "evil.xml:NewReleaseMessage",
            "not an ERN",
        ),
        (
            b'<m:NewReleaseMessage xmlns:m="http://ddex.net/xml/mead/mead"/>',
            "evil.xml:NewReleaseMessage",
            "not an ERN",
        ),
        (
            b'<ern:CatalogListMessage xmlns:ern="http://ddex.net/xml/ern/382"/>',
            "evil.xml:CatalogListMessage",
            "must be NewReleaseMessage or PurgeReleaseMessage",
        ),
        (
            b'<ern:ReleaseDeal xmlns:ern="http://ddex.net/xml/ern/43"/>',
            "evil.xml:ReleaseDeal",
            "must be NewReleaseMessage or PurgeReleaseMessage",
        ),
        (b"", "evil.xml", "is empty"),
        (b"  \n", "evil.xml", "is empty"),
        (b"PK\x03\x04 zip", "evil.xml", "not well-formed XML"),
        (b'{"kind": "grant"}', "evil.xml", "not well-formed XML"),
    ],
)
def test_wrong_roots_namespaces_and_non_xml_are_refused(data: bytes, field: str, text: str) -> None:
    ((got_field, message, _),) = refused(data)
    assert got_field == field and text in message


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_a_truncated_message_is_refused_with_a_line(cut: float) -> None:
    ((field, message, line),) = refused(VALID[: int(len(VALID) * cut)])
    assert field == "evil.xml" and message.startswith("is not well-formed XML") and line


def test_mismatched_tags_and_bad_encoding_are_refused() -> None:
    assert refused(VALID.replace(b"</DealList>", b"</DealLis>"))[0][1].startswith(
        "is not well-formed XML: Opening and ending tag mismatch"
    )
    bad_bytes = refused(VALID.replace(b"First Light", b"First \xff\xfe"))[0][1]
    assert bad_bytes.startswith("is not well-formed XML") and "\n" not in bad_bytes


def test_excessive_depth_is_refused() -> None:
    data = (ROOT + "<x>" * 300 + "</x>" * 300 + "</ern:NewReleaseMessage>").encode()
    assert "depth" in refused(data)[0][1]


def test_a_text_over_10_mb_anywhere_is_refused() -> None:
    data = ern(padding="<Comment>" + "x" * (11 * 1024 * 1024) + "</Comment>")
    ((field, message, _),) = refused(data)
    assert field == "evil.xml" and message.startswith("is not well-formed XML")
    assert "huge text node" in message or "Text node too long" in message  # libxml2 2.12 or 2.14


def test_a_kept_value_that_is_too_long_is_refused() -> None:
    data = ern(recordings=[Recording("A1", "US" + "X" * MAX_TEXT)])
    ((field, message, _),) = refused(data)
    assert field == "evil.xml:ISRC" and f"longer than {MAX_TEXT}" in message


def test_too_many_territories_in_one_deal_are_refused() -> None:
    deal = Deal(territories=("GB",) * (MAX_CHILDREN + 1))
    ((field, message, _),) = refused(ern(deals=[(("R0",), (deal,))]))
    assert field == "evil.xml:DealTerms" and "more than 10000 TerritoryCode" in message


# --- content errors -----------------------------------------------------------------


def test_a_deal_for_a_release_not_in_the_message_is_an_error_naming_both() -> None:
    data = ern(deals=[(("R0",), (Deal(),)), (("R0", "R9"), (Deal(),))])
    ((field, message, line),) = refused(data)
    assert field == "evil.xml:DealList/ReleaseDeal[2]/DealReleaseReference"
    assert message == "the deal refers to release 'R9', which is not in the message's ReleaseList"
    assert (
        line
        == data.decode()
        .splitlines()
        .index(next(x for x in data.decode().splitlines() if "R9" in x))
        + 1
    )


def test_a_release_listing_a_resource_not_in_the_message_is_an_error() -> None:
    ((field, message, _),) = refused(ern(releases=[Release("R0", ("A1", "A404"), icpn="1")]))
    assert field == "evil.xml:ReleaseList/Release[R0]/ReleaseResourceReference"
    assert "'A404'" in message


@pytest.mark.parametrize("version", ["382", "43"])
@pytest.mark.parametrize(
    ("periods", "text"),
    [
        ((("2026-02-30", None),), "'2026-02-30' is not a valid date"),
        ((("2026-13", None),), "'2026-13' is not a valid date"),
        ((("26-01-01", None),), "is not a date (YYYY-MM-DD"),
        (((None, "2026-01-01T25:00:00Z"),), "is not a valid date-time"),
        (((None, "2026-01-01T10:00:00+15:00"),), "invalid offset"),
        (((None, "tomorrow"),), "is not a date"),
        ((("2026-06-01", "2026-05-31"),), "ends (2026-06-01T00:00:00Z) no later than it starts"),
        ((("2026-06-01T10:00:00Z", "2026-06-01T10:00:00Z"),), "no later than it starts"),
    ],
)
def test_invalid_dates_are_errors_naming_the_deal(
    version: str, periods: tuple[tuple[str | None, str | None], ...], text: str
) -> None:
    ((field, message, line),) = refused(
        ern(version=version, deals=[(("R0",), (Deal(periods=periods),))])
    )
    assert field == "evil.xml:DealList/ReleaseDeal[1]/Deal[1]/DealTerms/ValidityPeriod"
    assert text in message and line


def test_an_end_date_on_the_day_it_starts_is_one_day() -> None:
    message = read_message(
        io.BytesIO(ern(deals=[(("R0",), (Deal(periods=(("2026-06-01", "2026-06-01"),)),))]))
    )
    grant = message.releases[0].grants[0]
    assert (grant["valid_from"], grant["valid_until"]) == (
        "2026-06-01T00:00:00Z",
        "2026-06-02T00:00:00Z",
    )


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        (
            {"created": "2026-02-30T00:00:00Z"},
            "MessageHeader/MessageCreatedDateTime",
            "not a valid date-time",
        ),
        ({"created": "yesterday"}, "MessageHeader/MessageCreatedDateTime", "not a date-time"),
        (
            {"control": "LifeMessage"},
            "MessageHeader/MessageControlType",
            "LiveMessage or TestMessage",
        ),
        ({"sender": "PADPIDA 2026"}, "MessageHeader/MessageSender/PartyId", "grant source"),
        ({"message_id": "M" * 201}, "MessageHeader/MessageId", "longer than 200"),
    ],
)
def test_header_errors(kwargs: dict[str, str], field: str, text: str) -> None:
    ((got_field, message, _),) = refused(ern(**kwargs))
    assert got_field == f"evil.xml:{field}" and text in message


def test_every_content_problem_is_reported_at_once() -> None:
    data = ern(
        created="never",
        deals=[
            (("R0",), (Deal(territories=("XX",)), Deal(periods=(("2026-02-30", None),)))),
            (("R7",), (Deal(),)),
        ],
    )
    fields = [f for f, _, _ in refused(data)]
    assert fields == [
        "evil.xml:MessageHeader/MessageCreatedDateTime",
        "evil.xml:DealList/ReleaseDeal[1]/Deal[1]/DealTerms/TerritoryCode",
        "evil.xml:DealList/ReleaseDeal[1]/Deal[2]/DealTerms/ValidityPeriod",
        "evil.xml:DealList/ReleaseDeal[2]/DealReleaseReference",
    ]


def test_a_deal_without_territory_or_validity_period_is_an_error() -> None:
    no_territory = refused(ern(deals=[(("R0",), (Deal(territories=()),))]))
    assert no_territory[0][1] == (
        "the deal has no TerritoryCode or ExcludedTerritoryCode"
        " (deal for R0 = release:0602527894567)"
    )
    no_period = refused(ern(deals=[(("R0",), (Deal(periods=()),))]))
    assert no_period[0][1].startswith("the deal has no ValidityPeriod (deal for R0")


def test_a_deal_error_names_every_release_the_deal_is_for() -> None:
    data = ern(
        releases=[
            Release("R0", ("A1",), icpn="0602527894567"),
            Release("R1", ("A1",), isrc="USRC17607839", track=True),
        ],
        deals=[(("R0", "R1"), (Deal(territories=("UK",)),))],
    )
    ((field, message, line),) = refused(data)
    assert field == "evil.xml:DealList/ReleaseDeal[1]/Deal[1]/DealTerms/TerritoryCode"
    assert message == (
        "'UK' is not an ISO 3166-1 alpha-2 code or Worldwide"
        " (deal for R0 = release:0602527894567, R1 = track:USRC17607839)"
    )
    assert (
        line
        == data.decode()
        .splitlines()
        .index(next(x for x in data.decode().splitlines() if "<TerritoryCode>UK" in x))
        + 1
    )


def test_one_release_twice_in_a_message_is_an_error() -> None:
    data = ern(
        releases=[
            Release("R0", ("A1",), icpn="0602527894567"),
            Release("R5", ("A1",), icpn="0602527894567"),
        ]
    )
    assert refused(data)[0][:2] == (
        "evil.xml:ReleaseList/Release[R5]",
        "release release:0602527894567 is also release R0; a message carries a release once",
    )


def test_values_that_are_not_ddex_terms_and_cannot_be_names_are_errors() -> None:
    model = refused(ern(deals=[(("R0",), (Deal(models=("Subscription Model",)),))]))
    assert "not a DDEX CommercialModelType" in model[0][1]
    use = refused(ern(deals=[(("R0",), (Deal(use_types=("On Demand",)),))]))
    assert "not a DDEX UseType" in use[0][1]


def test_duplicate_references_and_unidentified_releases_are_errors() -> None:
    twice = refused(
        ern(recordings=[Recording("A1", "USRC17607839"), Recording("A1", "USRC17607840")])
    )
    assert twice[0][1] == "resource reference 'A1' is used twice"
    nameless = refused(ern(releases=[Release("R0", ("A1",))]))
    assert "no ICPN, GRid, ISRC or ProprietaryId" in nameless[0][1]
    bad_isrc = refused(ern(recordings=[Recording("A1", "NOT-AN-ISRC")]))
    assert "is not an ISRC" in bad_isrc[0][1]


# --- memory ---------------------------------------------------------------------------

MEASURE = textwrap.dedent(
    """
    import json, sys, time
    from entitlements.ddex import read_message

    def status(key):  # kB, from the kernel's view of this process (VmRSS now, VmHWM peak)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

    read_message(sys.argv[2])  # warm up: imports, parser, a small message
    before = status("VmRSS")
    try:  # reset the peak to now (Linux >= 4.0); else the warm-up peak stays the floor
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    started = time.perf_counter()
    message = read_message(sys.argv[1])
    seconds = time.perf_counter() - started
    peak = status("VmHWM")
    print(json.dumps({
        "rss_before_kib": before, "peak_kib": peak, "growth_kib": peak - before,
        "seconds": round(seconds, 2), "tracks": len(message.releases[0].tracks),
        "grants": message.grant_count,
    }))
    """
)


def write_big_message(path: Path, size: int) -> int:
    """An ERN 4.3 album whose bulk is descriptive metadata, written streamed; returns tracks."""
    contributor = (
        "<Contributor><ContributorPartyReference>PArtist</ContributorPartyReference>"
        "<Role>Composer</Role><DisplayCredits><DisplayCreditText>"
        + "Written, arranged and produced with many thanks to everyone involved. " * 25
        + "</DisplayCreditText></DisplayCredits></Contributor>\n"
    )
    blob = "<TechnicalDetails><File><URI>" + "QUJD" * 250_000 + "</URI></File></TechnicalDetails>"
    written = 0
    count = 0
    with path.open("w", encoding="utf-8") as out:
        head = ern().decode()
        header, rest = head.split("<ResourceList>", 1)
        out.write(header + "<ResourceList>\n")
        while written < size:
            count += 1
            isrc = f"QZ{count // 10_000_000:03d}{count % 10_000_000:07d}"[:12]
            body = (
                f"<SoundRecording><ResourceReference>A{count}</ResourceReference>"
                "<Type>MusicalWorkSoundRecording</Type><SoundRecordingEdition>"
                f"<ResourceId><ISRC>{isrc}</ISRC></ResourceId>{blob if count % 10 == 0 else ''}"
                f"</SoundRecordingEdition><DisplayTitleText>Track {count}</DisplayTitleText>"
                + contributor * 20
                + "<Duration>PT3M</Duration></SoundRecording>\n"
            )
            out.write(body)
            written += len(body)
        refs = "".join(
            f"<ResourceGroupContentItem><ReleaseResourceReference>A{i}</ReleaseResourceReference>"
            "</ResourceGroupContentItem>"
            for i in range(1, count + 1)
        )
        release = rest.split("<ReleaseList>", 1)[1].split("</ReleaseList>", 1)
        album = release[0].replace(
            "<ResourceGroupContentItem><ReleaseResourceReference>A1</ReleaseResourceReference>"
            "</ResourceGroupContentItem>",
            refs,
        )
        out.write("</ResourceList>\n<ReleaseList>" + album + "</ReleaseList>" + release[1])
    return count


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc")
def test_a_100_mb_message_of_descriptive_metadata_is_read_in_flat_memory(tmp_path: Path) -> None:
    big = tmp_path / "big.xml"
    tracks = write_big_message(big, 100 * 1024 * 1024)
    assert big.stat().st_size >= 100 * 1024 * 1024
    small = tmp_path / "small.xml"
    small.write_bytes(ern())
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(big), str(small)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout)
    print(f"\n100 MB ERN message: {result}")  # shown with -s
    assert result["tracks"] == tracks and result["grants"] == 1
    # What the reader keeps is the ~760 tracks; the 100 MB must not show (keeping
    # the parsed elements instead grows it by ~120 MB).
    assert result["growth_kib"] < 24 * 1024, result
