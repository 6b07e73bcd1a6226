"""Who may forward a request to the gateway check: ``ENTITLEMENTS_GATEWAY_TRUSTED_PROXIES``.

The value is a JSON list (``["10.0.0.0/8", "::1"]``) or a comma- or
space-separated string (``10.0.0.0/8, ::1``). Each entry is

- an IPv4 or IPv6 address (``192.0.2.7``, ``2001:db8::7``): that address alone;
- a network in CIDR notation (``10.0.0.0/8``, ``fd00::/8``). Host bits must be
  zero: ``10.0.0.1/8`` is refused (did you mean ``10.0.0.0/8``?) instead of being
  widened silently;
- ``unix``: a peer on a Unix socket (the ASGI server reports no address), where
  the socket's file permissions are the trust boundary.

Nothing configured trusts nobody. There is no wildcard; ``0.0.0.0/0`` and
``::/0`` say "everyone" explicitly, which defeats the check. An IPv4-mapped
IPv6 peer (``::ffff:10.1.2.3``) is matched as the IPv4 address it carries; a
peer's IPv6 zone (``fe80::1%eth0``) is ignored; a zone in the configuration is
refused. A peer that is not an IP address at all is not trusted.

The peer is the TCP peer of the connection (the ASGI ``client``), never an
``X-Forwarded-For`` entry: see the note on uvicorn's ``--proxy-headers`` in
``docs/gateway.md``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from entitlements.errors import FieldError, InvalidInputError

__all__ = ["MAX_PROXY_ENTRIES", "TrustedProxies", "parse_trusted_proxies"]

MAX_PROXY_ENTRIES: Final = 1000
_CACHE_SIZE: Final = 1024
_FIELD: Final = "ENTITLEMENTS_GATEWAY_TRUSTED_PROXIES"
_SPLIT_RE: Final = re.compile(r"[\s,]+")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The configured proxies; :meth:`trusts` answers for one peer."""

    networks: tuple[Network, ...] = ()
    unix: bool = False
    # Answers by peer string: a gateway sees a handful of proxies, and parsing an
    # address costs microseconds. Bounded: emptied when full.
    _answers: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    def trusts(self, peer: str | None) -> bool:
        """Is ``peer`` (an address as the ASGI server reports it; ``None``: a Unix socket) trusted?"""
        if peer is None:
            return self.unix
        answer = self._answers.get(peer)
        if answer is None:
            if len(self._answers) >= _CACHE_SIZE:
                self._answers.clear()
            answer = self._answers[peer] = self._decide(peer)
        return answer

    def _decide(self, peer: str) -> bool:
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def __bool__(self) -> bool:
        return self.unix or bool(self.networks)


def parse_trusted_proxies(value: str | Sequence[str] | None) -> TrustedProxies:
    """Parse the setting; raises :class:`InvalidInputError` naming each bad entry."""
    entries = _entries(value)
    if len(entries) > MAX_PROXY_ENTRIES:
        raise InvalidInputError(
            FieldError(_FIELD, f"must have at most {MAX_PROXY_ENTRIES} entries")
        )
    errors: list[FieldError] = []
    networks: list[Network] = []
    unix = False
    for i, entry in enumerate(entries):
        where = f"{_FIELD}.{i}"
        if not isinstance(entry, str):
            errors.append(FieldError(where, "must be a string: an address, a CIDR, or 'unix'"))
            continue
        if entry == "unix":
            unix = True
            continue
        if "%" in entry:
            errors.append(FieldError(where, f"{entry[:60]!r}: an IPv6 zone (%…) is not allowed"))
            continue
        try:
            network = ipaddress.ip_network(entry, strict=True)
        except ValueError as exc:
            errors.append(FieldError(where, _explain(entry, exc)))
            continue
        if network not in networks:
            networks.append(network)
    if errors:
        raise InvalidInputError(errors)
    return TrustedProxies(tuple(networks), unix)


def _entries(value: str | Sequence[str] | None) -> list[object]:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise InvalidInputError(
                    FieldError(_FIELD, f"is not a valid JSON list: {exc}")
                ) from None
            if not isinstance(parsed, list):
                raise InvalidInputError(FieldError(_FIELD, "must be a JSON list of strings"))
            return list(parsed)
        return [e for e in _SPLIT_RE.split(text) if e]
    return list(value)


def _explain(entry: str, exc: ValueError) -> str:
    shown = repr(entry[:60])
    if "has host bits set" in str(exc):
        wider = ipaddress.ip_network(entry, strict=False)
        return f"{shown} has host bits set: did you mean {wider}?"
    return f"{shown} is not an IP address or a CIDR network (e.g. 10.0.0.0/8, fd00::/8), or 'unix'"
