"""ERN dates and date-times as instants.

DDEX dates are inclusive: a deal with ``StartDate`` 2026-03-01 starts at the
beginning of that day, one with ``EndDate`` 2026-03-31 ends at the end of that
day. A grant's window is half-open, ``[valid_from, valid_until)``, so an
``EndDate`` becomes 00:00 of the *following* day. A date-only value is read in
the mapping's time zone (default UTC). ERN dates may also be a year or a
month (``YYYY``, ``YYYY-MM``): they start at its first day and end after its last.

``xs:dateTime`` values (``StartDateTime``, ``MessageCreatedDateTime``…) are
read as given; one without an offset is read as UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Final

_ISO_DATE: Final = re.compile(r"(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?")
_DATE_TIME: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?"
)


class DateError(ValueError):
    """A value that is not the date or date-time it should be (the message says why)."""


def _date_parts(text: str) -> tuple[int, int | None, int | None]:
    match = _ISO_DATE.fullmatch(text)
    if match is None:
        raise DateError(f"{text[:40]!r} is not a date (YYYY-MM-DD, YYYY-MM or YYYY)")
    year, month, day = match.groups()
    parts = (int(year), int(month) if month else None, int(day) if day else None)
    try:
        datetime(parts[0], parts[1] or 1, parts[2] or 1)
    except ValueError:
        raise DateError(f"{text!r} is not a valid date") from None
    if parts[0] < 1:
        raise DateError(f"{text!r} is not a valid date")
    return parts


def _midnight(year: int, month: int, day: int, zone: tzinfo) -> datetime:
    return datetime(year, month, day, tzinfo=zone).astimezone(UTC)


def start_of(text: str, zone: tzinfo) -> datetime:
    """The first instant of a date, month or year, in ``zone``, as UTC."""
    year, month, day = _date_parts(text)
    return _midnight(year, month or 1, day or 1, zone)


def end_of(text: str, zone: tzinfo) -> datetime:
    """The first instant *after* a date, month or year (it is inclusive), in ``zone``, as UTC."""
    year, month, day = _date_parts(text)
    try:
        if day is not None and month is not None:
            following = datetime(year, month, day) + timedelta(days=1)
            return _midnight(following.year, following.month, following.day, zone)
        if month is not None:
            return _midnight(year + (month == 12), month % 12 + 1, 1, zone)
        return _midnight(year + 1, 1, 1, zone)
    except (ValueError, OverflowError):
        raise DateError(f"{text!r} has no day after it") from None


def instant(text: str) -> datetime:
    """An ``xs:dateTime`` as an aware UTC datetime; no offset means UTC."""
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise DateError(
            f"{text[:40]!r} is not a date-time (YYYY-MM-DDThh:mm:ss, optional fraction and offset)"
        )
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    zone: tzinfo = UTC
    if offset and offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 14 or minutes > 59:
            raise DateError(f"{text!r} has an invalid offset")
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        value = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, zone
        )
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise DateError(f"{text!r} is not a valid date-time") from None
