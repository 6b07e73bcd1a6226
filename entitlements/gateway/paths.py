"""A request path as the gateway reads it: split into decoded segments, or refused.

The route table matches *decoded segments*, never the raw text, so
``/tracks/US%52C1/stream`` and ``/tracks/USRC1/stream`` name the same track, as
they do for the upstream service behind the proxy. Where the proxy, the
gateway and the upstream could read one path two ways, the path is refused
instead of guessed at. The rules, in the order they apply:

1. At most :data:`MAX_PATH_LENGTH` characters; it starts with ``/`` (origin
   form: no scheme, no host, no ``*``). A ``?query`` is cut off and ignored; a
   ``#`` is refused (a client never sends a fragment).
2. Only RFC 3986 path characters: letters, digits, ``-._~!$&'()*+,;=:@/``
   and well-formed ``%XX`` escapes. A space, a backslash, a quote, a control
   character or a raw non-ASCII byte is refused (some servers read ``\\`` as
   ``/``).
3. Split on ``/``. An empty segment inside the path (``//``) is refused
   (nginx merges slashes, Envoy and most upstreams do not). A trailing slash
   is kept as a final empty segment: ``/tracks/`` is not ``/tracks``.
4. Each segment is percent-decoded once, as strict UTF-8. A decoded ``/``
   (``%2F``), ``\\`` (``%5C``), NUL or other control character is refused:
   upstreams disagree on whether an encoded slash separates segments. A
   ``%25`` decodes to ``%`` and stays data (nothing is decoded twice).
5. A ``.`` or ``..`` segment, raw or encoded (``%2e%2E``), is refused rather
   than resolved: a browser resolves dot-segments before sending, so only a
   hand-made request has them, and a proxy and an upstream that resolve them
   differently would authorize one path and serve another.
6. At most :data:`MAX_SEGMENTS` segments.

Case is kept (paths are case-sensitive), ``+`` is a plus (not a space), and
``;`` is an ordinary character (a ``;jsessionid=…`` suffix makes a segment
that matches no literal and no resource id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote_to_bytes

__all__ = [
    "MAX_PATH_LENGTH",
    "MAX_SEGMENTS",
    "PathRefusal",
    "split_path",
]

MAX_PATH_LENGTH: Final = 4096
MAX_SEGMENTS: Final = 64

# RFC 3986 ``path-abempty``: "/" followed by pchars (unreserved, pct-encoded,
# sub-delims, ":" and "@") and further "/". Checked as "no other character" plus
# "every % starts an escape": two scans of one character class each, several times
# faster than one alternation per character.
_NOT_PATH_CHAR_RE: Final = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@/%]")
_BAD_ESCAPE_RE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
# What a decoded segment must not hold: a separator by another name, or a control character.
_DECODED_BAD_RE: Final = re.compile(r"[/\\\x00-\x1f\x7f]")
_DOTS: Final = frozenset({".", ".."})


@dataclass(frozen=True, slots=True)
class PathRefusal:
    """Why a path cannot be matched; ``message`` says it for a person."""

    message: str


def split_path(target: str) -> tuple[str, ...] | PathRefusal:
    """The decoded segments of ``target`` (a path, optionally with ``?query``), or why not.

    ``/`` is ``("",)``; ``/a/b`` is ``("a", "b")``; ``/a/`` is ``("a", "")``.
    """
    if len(target) > MAX_PATH_LENGTH:
        return PathRefusal(f"the path is longer than {MAX_PATH_LENGTH} characters")
    path = target.split("?", 1)[0]
    if not path.startswith("/"):
        return PathRefusal("the path must start with '/' (origin form, no scheme or host)")
    if "#" in path:
        return PathRefusal("the path holds a '#' (a fragment is never sent)")
    if _NOT_PATH_CHAR_RE.search(path) or ("%" in path and _BAD_ESCAPE_RE.search(path)):
        return PathRefusal(
            "the path holds a character outside RFC 3986 (a space, a backslash, a quote,"
            " a control or non-ASCII character) or a malformed %-escape"
        )
    raw = path[1:].split("/")
    if len(raw) > MAX_SEGMENTS:
        return PathRefusal(f"the path has more than {MAX_SEGMENTS} segments")
    last = len(raw) - 1
    out: list[str] = []
    for i, segment in enumerate(raw):
        if not segment:
            if i != last:
                return PathRefusal("the path holds an empty segment ('//')")
            out.append("")
            continue
        if "%" in segment:
            try:
                segment = unquote_to_bytes(segment).decode("utf-8")
            except UnicodeDecodeError:
                return PathRefusal("a %-escaped segment of the path is not UTF-8")
            if _DECODED_BAD_RE.search(segment):
                return PathRefusal(
                    "the path holds an encoded slash, backslash or control character"
                    " (%2F, %5C, %00…)"
                )
        if segment in _DOTS:
            return PathRefusal("the path holds a dot-segment ('.' or '..', raw or %-encoded)")
        out.append(segment)
    return tuple(out)
