"""A hardened, streamed XML reader that turns an ERN message into small records.

lxml's ``iterparse`` reads the message in chunks; every element is cleared and
unlinked as soon as its end tag has been read, and only the elements listed
in ``entitlements.ddex.elements`` are copied into ``Node`` trees, one per
record (the header, each resource, each release, each ReleaseDeal, the purged
release). Memory therefore follows the number of records, not the bytes.

Hostile XML:

- A DOCTYPE is refused before lxml sees the document: the prolog (what comes
  before the root element) is scanned first. No DOCTYPE means no entity
  declarations, no external DTD, no external entities (XXE) and no entity
  expansion (billion laughs). The parser is configured as if one got through
  anyway (no DTD loading or validation, no entity resolution, no network), and
  a DOCTYPE seen by lxml at the root is refused again.
- ``huge_tree`` stays off: libxml2's limits on depth (256) and on the size of
  a text node (10 MB) apply. A kept text over ``MAX_TEXT`` characters and a
  kept element with more than ``MAX_CHILDREN`` kept children are refused.
- Comments and processing instructions are dropped by the parser.
- Anything not well-formed (truncated, mismatched tags, undefined entities,
  bad encoding) is refused with lxml's message and line.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import IO, Final

from lxml import etree

from entitlements.ddex.elements import (
    ERN_NAMESPACE_PREFIX,
    LIST_SECTIONS,
    ROOTS,
    TRIES,
    VERSIONS,
    Trie,
)
from entitlements.ddex.problems import refuse

MAX_TEXT: Final = 1024
"""Longest text kept from one element (an id, a code, a date); longer is an error."""

MAX_CHILDREN: Final = 10_000
"""Most kept children of one kept element (deals of a ReleaseDeal, territories of a deal…)."""

MAX_PROLOG: Final = 64 * 1024
"""Most bytes before the root element (XML declaration, comments)."""

_CHUNK: Final = 64 * 1024

Source = str | os.PathLike[str] | IO[bytes]


@dataclass(slots=True)
class Node:
    """A kept element: its local name, line, attributes, stripped text and kept children."""

    name: str
    line: int | None
    attrib: dict[str, str]
    text: str = ""
    children: list[Node] = field(default_factory=list)

    def first(self, name: str) -> Node | None:
        for child in self.children:
            if child.name == name:
                return child
        return None

    def all(self, name: str) -> list[Node]:
        return [child for child in self.children if child.name == name]

    def text_of(self, name: str) -> str | None:
        child = self.first(name)
        return child.text if child is not None and child.text else None


@dataclass(frozen=True, slots=True)
class Root:
    """The root element: which message, which ERN version."""

    name: str
    kind: str
    namespace: str
    version: str
    generation: int
    line: int | None


@dataclass(frozen=True, slots=True)
class Record:
    """One record: ``section`` is ``MessageHeader``, ``PurgedRelease`` or the list it is in."""

    section: str
    node: Node


def records(
    source: Source, *, name: str, read_size: int | None = None
) -> Generator[Root | Record, None, None]:
    """The message's root, then its records in document order.

    ``read_size``: read the source this many bytes at a time (lxml parses what it
    is given before it yields: a reader that stops early, like ``read_header``,
    reads less with small reads; the default reads 64 KiB at a time).

    Raises ``InvalidInputError`` naming ``name`` for anything that is not a
    well-formed ERN NewReleaseMessage or PurgeReleaseMessage.
    """
    if isinstance(source, str | os.PathLike):
        try:
            with open(source, "rb") as handle:
                yield from _records(_limited(handle, read_size), name)
        except OSError as exc:
            raise refuse(name, "", f"cannot be read: {exc.strerror or exc}") from None
    else:
        yield from _records(_limited(source, read_size), name)


class _Limited:
    """A binary file read at most ``size`` bytes at a time."""

    def __init__(self, handle: IO[bytes], size: int) -> None:
        self._handle = handle
        self._size = size

    def read(self, size: int = -1) -> bytes:
        return self._handle.read(self._size if size < 0 else min(size, self._size))


def _limited(handle: IO[bytes], size: int | None) -> IO[bytes]:
    return handle if size is None else _Limited(handle, size)  # type: ignore[return-value]


def _records(handle: IO[bytes], name: str) -> Generator[Root | Record, None, None]:
    stream = _checked_prolog(handle, name)
    etree.clear_error_log()  # iterparse's errors carry this thread's log: only ours in it
    events = etree.iterparse(
        stream,
        events=("start", "end"),
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        recover=False,
    )
    namespace = ""
    section = ""
    # (what to keep below, the kept node or None); None below marks an ignored subtree
    stack: list[tuple[Trie | None, Node | None]] = []
    ignored: tuple[Trie | None, Node | None] = (None, None)
    try:
        for event, elem in events:
            if event == "start":
                if not stack:
                    root = _root(elem, name)
                    namespace = root.namespace
                    yield root
                    stack.append((TRIES[root.generation], None))
                    continue
                parent_trie, parent = stack[-1]
                if parent_trie is None:
                    stack.append(ignored)
                    continue
                local = _local(elem.tag, namespace)
                below = parent_trie.get(local) if local is not None else None
                if below is None:
                    stack.append(ignored)
                    continue
                if len(stack) == 1:
                    section = local or ""
                    if section in LIST_SECTIONS:
                        stack.append((below, None))
                        continue
                node = Node(
                    str(local), elem.sourceline, {str(k): str(v) for k, v in elem.attrib.items()}
                )
                if parent is not None:
                    if len(parent.children) >= MAX_CHILDREN:
                        raise refuse(
                            name,
                            parent.name,
                            f"has more than {MAX_CHILDREN} {local} elements",
                            elem.sourceline,
                        )
                    parent.children.append(node)
                stack.append((below, node))
            else:
                _, kept = stack.pop()
                if kept is not None:
                    node = kept
                    text = (elem.text or "").strip()
                    if len(text) > MAX_TEXT:
                        raise refuse(
                            name, node.name, f"is longer than {MAX_TEXT} characters", node.line
                        )
                    node.text = text
                    depth = len(stack)
                    if depth == 1 or (depth == 2 and section in LIST_SECTIONS):
                        yield Record(section, node)
                # Drop what has been read: memory must not follow the file size.
                elem.clear()
                parent_elem = elem.getparent()
                if parent_elem is not None:
                    parent_elem.remove(elem)
    except etree.XMLSyntaxError as exc:
        text, line = _syntax_error(exc)
        raise refuse(name, "", f"is not well-formed XML: {text}", line) from None
    except (etree.LxmlError, LookupError, UnicodeError) as exc:
        raise refuse(name, "", f"cannot be read as XML: {exc}") from None


def _syntax_error(exc: etree.XMLSyntaxError) -> tuple[str, int | None]:
    """libxml2's own complaint: the exception's message is sometimes only "no element
    found". The log iterparse hands over may hold earlier parses' entries too: the
    last entry is this one's."""
    for entry in reversed(exc.error_log):
        if entry.level_name in {"ERROR", "FATAL"}:
            return " ".join(entry.message.split()), entry.line or None
    return " ".join(exc.msg.split()), exc.lineno or None


def _local(tag: object, namespace: str) -> str | None:
    """The local name of an element in no namespace or the message's; None otherwise."""
    if not isinstance(tag, str):
        return None
    if tag[0] != "{":
        return tag
    ns, _, local = tag[1:].partition("}")
    return local if ns == namespace else None


def _root(elem: etree._Element, name: str) -> Root:
    line = elem.sourceline
    docinfo = elem.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise refuse(name, "", "has a DOCTYPE declaration; DTDs and entities are not allowed")
    qname = etree.QName(elem)
    namespace = qname.namespace or ""
    suffix = (
        namespace[len(ERN_NAMESPACE_PREFIX) :]
        if namespace.startswith(ERN_NAMESPACE_PREFIX)
        else None
    )
    if suffix is None or suffix not in VERSIONS:
        shown = repr(namespace[:100]) if namespace else "no namespace"
        raise refuse(
            name,
            qname.localname[:100],
            f"the root element is in {shown}, not an ERN 3.4.1-3.8.2 or 4.1-4.3 namespace"
            f" ({ERN_NAMESPACE_PREFIX} followed by {', '.join(VERSIONS)})",
            line,
        )
    if qname.localname not in ROOTS:
        raise refuse(
            name,
            qname.localname[:100],
            "the root element must be NewReleaseMessage or PurgeReleaseMessage",
            line,
        )
    version, generation = VERSIONS[suffix]
    return Root(qname.localname, ROOTS[qname.localname], namespace, version, generation, line)


# --- the prolog check -------------------------------------------------------


class _Prefixed:
    """``head`` (already read), then the rest of ``rest``: what lxml reads from."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0 or size >= len(self._head):
                out, self._head = self._head, b""
                return out
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._rest.read(size)


def _checked_prolog(handle: IO[bytes], name: str) -> _Prefixed:
    """Read up to the root element's start and refuse a DOCTYPE; return the whole stream."""
    head = b""
    while True:
        chunk = handle.read(_CHUNK)
        head += chunk
        verdict = _prolog(head)
        if verdict == "doctype":
            raise refuse(
                name,
                "",
                "has a DOCTYPE declaration; DTDs and entities are not allowed"
                " (no external DTDs, no entity declarations)",
                _line_of(head, b"<!DOCTYPE"),
            )
        if not chunk and not head.strip():
            raise refuse(name, "", "is empty: an ERN message was expected")
        if verdict == "root" or not chunk:
            return _Prefixed(head, handle)  # lxml reports whatever else is wrong
        if len(head) > MAX_PROLOG:
            raise refuse(name, "", f"has more than {MAX_PROLOG} bytes before its root element")


def _prolog(head: bytes) -> str:
    """``root`` (the root element starts, no DOCTYPE before it), ``doctype``, or ``more``."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head[2 : len(head) - len(head) % 2].decode(
            "utf-16-le" if head[0] == 0xFF else "utf-16-be", errors="replace"
        )
    elif head.startswith((b"<\x00", b"\x00<")):
        text = head[: len(head) - len(head) % 2].decode(
            "utf-16-le" if head[0] == 0x3C else "utf-16-be", errors="replace"
        )
    else:
        text = head.decode("latin-1")  # markup is ASCII in every ASCII-compatible encoding
    pos = 0
    if text.startswith("\ufeff") or text.startswith("\xef\xbb\xbf"):
        pos = 1 if text[0] == "\ufeff" else 3
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if len(text) - pos < 4:
            return "more"  # too little to tell "<!--" from "<!DOCTYPE" from "<root"
        if text.startswith("<?", pos):
            end = text.find("?>", pos + 2)
            if end < 0:
                return "more"
            pos = end + 2
        elif text.startswith("<!--", pos):
            end = text.find("-->", pos + 4)
            if end < 0:
                return "more"
            pos = end + 3
        elif text.startswith("<!", pos):
            return "doctype"
        else:
            return "root"  # an element, or not XML at all: lxml says which


def _line_of(head: bytes, marker: bytes) -> int | None:
    at = head.find(marker)
    return head.count(b"\n", 0, at) + 1 if at >= 0 else None
