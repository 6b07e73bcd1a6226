"""DDEX ERN deal messages as grants: a pure, streamed reader and mapper.

``read_message`` reads one ERN 3.4.1-3.8.2 or 4.1-4.3 NewReleaseMessage or
PurgeReleaseMessage (a path or a binary file object) into a ``DdexMessage``;
``read_messages`` reads several, ordered by ``MessageCreatedDateTime``;
``load_mapping`` reads a mapping file (TOML or JSON). No database, no network:
the import service applies what these return.
"""

from entitlements.ddex.mapping import DEFAULT_MAPPING, DdexMapping, load_mapping, mapping_from_dict
from entitlements.ddex.message import read_header, read_message, read_messages
from entitlements.ddex.model import (
    DdexMessage,
    DdexRelease,
    MessageHeader,
    PurgedRelease,
    SkippedDeal,
)

__all__ = [
    "DEFAULT_MAPPING",
    "DdexMapping",
    "DdexMessage",
    "DdexRelease",
    "MessageHeader",
    "PurgedRelease",
    "SkippedDeal",
    "load_mapping",
    "mapping_from_dict",
    "read_header",
    "read_message",
    "read_messages",
]
