"""The gateway's settings, read once at start: routes, trusted proxies, territory header.

:func:`gateway_config` turns the ``ENTITLEMENTS_GATEWAY_*`` settings into one
:class:`GatewayConfig`; a bad table, proxy list or convention stops the start,
every problem named (``InvalidInputError``). Pure: no I/O beyond reading the
route file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, cast

from entitlements.errors import FieldError, InvalidInputError
from entitlements.gateway.forwarded import ALL_CONVENTIONS, Convention
from entitlements.gateway.proxies import TrustedProxies, parse_trusted_proxies
from entitlements.gateway.route_config import load_routes, routes_from_data
from entitlements.gateway.routes import RouteTable

__all__ = ["GatewayConfig", "gateway_config", "parse_conventions"]

_SPLIT_RE: Final = re.compile(r"[\s,]+")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """What ``/v1/gateway/check`` needs besides the services."""

    routes: RouteTable
    proxies: TrustedProxies = field(default_factory=TrustedProxies)
    territory_header: str | None = None
    conventions: frozenset[Convention] = ALL_CONVENTIONS


def parse_conventions(value: str | None) -> frozenset[Convention]:
    """``"nginx"`` or ``"envoy, traefik"``; unset or empty: all three."""
    if value is None or not value.strip():
        return ALL_CONVENTIONS
    names = [n.lower() for n in _SPLIT_RE.split(value.strip()) if n]
    unknown = [n for n in names if n not in ALL_CONVENTIONS]
    if unknown:
        raise InvalidInputError(
            FieldError(
                "ENTITLEMENTS_GATEWAY_CONVENTIONS",
                f"{unknown[0][:20]!r} is not one of envoy, nginx, traefik",
            )
        )
    return frozenset(cast(Convention, n) for n in names)


def gateway_config(
    routes: str | None,
    trusted_proxies: str | None,
    territory_header: str | None,
    conventions: str | None,
) -> GatewayConfig:
    """The settings' values, checked; every problem reported at once."""
    errors: list[FieldError] = []
    table = routes_from_data([])
    if routes is not None and routes.strip():
        try:
            table = load_routes(routes)
        except InvalidInputError as exc:
            errors.extend(exc.errors)
    proxies = TrustedProxies()
    try:
        proxies = parse_trusted_proxies(trusted_proxies)
    except InvalidInputError as exc:
        errors.extend(exc.errors)
    accepted = ALL_CONVENTIONS
    try:
        accepted = parse_conventions(conventions)
    except InvalidInputError as exc:
        errors.extend(exc.errors)
    if errors:
        raise InvalidInputError(errors)
    return GatewayConfig(table, proxies, territory_header or None, accepted)
