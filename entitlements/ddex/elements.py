"""Which ERN versions we read, and which of their elements we keep.

An ERN message is mostly descriptive metadata (titles, artists, contributors,
technical details, images). The reader keeps only the elements named here, a
small tree per record, and drops everything else as soon as it has been
parsed, so memory follows the number of releases, resources and deals, never
the size of the file.

Element names are those of the ERN 3.8.2, 4.1.1 and 4.3 schemas (DDEX's XSDs,
``targetNamespace`` ``http://ddex.net/xml/ern/382``, ``…/411``, ``…/43``).
ERN 3.4.1 to 3.8.1 use the 3.8.2 names for everything read here, 4.1 and 4.2
those of 4.1.1/4.3. Child elements are unqualified in every version
(``elementFormDefault="unqualified"``); a child in the root's namespace is
accepted too, since some senders write the whole message in a default namespace.
"""

from __future__ import annotations

from typing import Final

ERN_NAMESPACE_PREFIX: Final = "http://ddex.net/xml/ern/"

# namespace suffix -> (version, generation)
VERSIONS: Final[dict[str, tuple[str, int]]] = {
    "341": ("3.4.1", 3),
    "35": ("3.5", 3),
    "351": ("3.5.1", 3),
    "36": ("3.6", 3),
    "37": ("3.7", 3),
    "371": ("3.7.1", 3),
    "38": ("3.8", 3),
    "381": ("3.8.1", 3),
    "382": ("3.8.2", 3),
    "41": ("4.1", 4),
    "411": ("4.1.1", 4),
    "42": ("4.2", 4),
    "43": ("4.3", 4),
}

ROOTS: Final = {"NewReleaseMessage": "new", "PurgeReleaseMessage": "purge"}

LIST_SECTIONS: Final = frozenset({"ResourceList", "ReleaseList", "DealList"})
"""Top-level lists whose children are records; other kept top-level elements are records."""

Trie = dict[str, "Trie"]
"""Element names to keep under an element, each with what to keep under it."""

_LEAF: Final[Trie] = {}

RESOURCE_KINDS: Final = {
    "SoundRecording": "sound_recording",
    "Video": "video",
    "Image": "image",
    "Text": "text",
    "SheetMusic": "sheet_music",
    "Software": "software",
    "MIDI": "midi",
    "UserDefinedResource": "user_defined_resource",
}

RELEASE_ID: Final[Trie] = {
    "GRid": _LEAF,
    "ISRC": _LEAF,
    "ICPN": _LEAF,
    "CatalogNumber": _LEAF,
    "ProprietaryId": _LEAF,
}

_HEADER: Final[Trie] = {
    "MessageId": _LEAF,
    "MessageSender": {"PartyId": _LEAF},
    "MessageCreatedDateTime": _LEAF,
    "MessageControlType": _LEAF,
}

# A DSP in DistributionChannel: ERN 3 PartyId is text; ERN 4 PartyId has children.
_DSP: Final[Trie] = {
    "PartyId": {
        "ISNI": _LEAF,
        "DPID": _LEAF,
        "IpiNameNumber": _LEAF,
        "IPN": _LEAF,
        "CisacSocietyId": _LEAF,
        "ProprietaryId": _LEAF,
    },
    "PartyName": {"FullName": _LEAF},
}

_DEAL_TERMS: Final[Trie] = {
    "CommercialModelType": _LEAF,
    "Usage": {"UseType": _LEAF},  # ERN 3
    "UseType": _LEAF,  # ERN 4
    "TakeDown": _LEAF,  # ERN 3
    "AllDealsCancelled": _LEAF,  # ERN 3
    "TerritoryCode": _LEAF,
    "ExcludedTerritoryCode": _LEAF,
    "DistributionChannel": _DSP,
    "ExcludedDistributionChannel": _DSP,
    "PriceInformation": {"PriceType": _LEAF, "PriceCode": _LEAF},
    "ValidityPeriod": {
        "StartDate": _LEAF,
        "EndDate": _LEAF,
        "StartDateTime": _LEAF,
        "EndDateTime": _LEAF,
    },
}

_RELEASE_DEAL: Final[Trie] = {
    "DealReleaseReference": _LEAF,
    "Deal": {"DealReference": _LEAF, "DealTerms": _DEAL_TERMS},
}

_OTHER_RESOURCE: Final[Trie] = {"ResourceReference": _LEAF}

# ERN 4: a release lists its resources in nested ResourceGroups.
_RESOURCE_GROUP: Trie = {"ResourceGroupContentItem": {"ReleaseResourceReference": _LEAF}}
_RESOURCE_GROUP["ResourceGroup"] = _RESOURCE_GROUP


def _trie(*, generation: int) -> Trie:
    if generation == 3:
        sound_recording: Trie = {
            "ResourceReference": _LEAF,
            "SoundRecordingId": {"ISRC": _LEAF},
        }
        releases: Trie = {
            "Release": {
                "ReleaseId": RELEASE_ID,
                "ReleaseReference": _LEAF,
                "ReleaseType": _LEAF,
                "ReleaseResourceReferenceList": {"ReleaseResourceReference": _LEAF},
            }
        }
    else:
        sound_recording = {
            "ResourceReference": _LEAF,
            "ResourceId": {"ISRC": _LEAF},  # 4.1, 4.1.1, 4.2
            "SoundRecordingEdition": {"Type": _LEAF, "ResourceId": {"ISRC": _LEAF}},  # 4.3
        }
        track_release: Trie = {
            "ReleaseReference": _LEAF,
            "ReleaseId": RELEASE_ID,
            "ReleaseResourceReference": _LEAF,
        }
        releases = {
            "Release": {
                "ReleaseReference": _LEAF,
                "ReleaseType": _LEAF,
                "ReleaseId": RELEASE_ID,
                "ResourceGroup": _RESOURCE_GROUP,
            },
            "TrackRelease": track_release,
            "ClipRelease": track_release,
        }
    resources: Trie = {name: _OTHER_RESOURCE for name in RESOURCE_KINDS}
    resources["SoundRecording"] = sound_recording
    return {
        "MessageHeader": _HEADER,
        "ResourceList": resources,
        "ReleaseList": releases,
        "DealList": {"ReleaseDeal": _RELEASE_DEAL},
        "PurgedRelease": {"ReleaseId": RELEASE_ID},
    }


TRIES: Final[dict[int, Trie]] = {3: _trie(generation=3), 4: _trie(generation=4)}
