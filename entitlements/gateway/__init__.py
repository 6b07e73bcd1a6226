"""The gateway adapter's pure parts: what a proxy forwarded, and which route it names.

A proxy in front of the real services (nginx ``auth_request``, Envoy
``ext_authz``, Traefik ``forwardAuth``) asks ``/v1/gateway/check`` before it
forwards a request. Everything here is plain Python (no FastAPI, asyncpg or
redis), so the decisions about paths and headers are tested without a server:

- :mod:`entitlements.gateway.routes` — the route table
  (``ENTITLEMENTS_GATEWAY_ROUTES``): ``(method, path)`` → ``(resource, action)``,
  public, or no match; and how a raw path is normalised.
- :mod:`entitlements.gateway.proxies` — who may forward
  (``ENTITLEMENTS_GATEWAY_TRUSTED_PROXIES``).
- :mod:`entitlements.gateway.forwarded` — the original method and URI, read
  from the request the proxy sent in Envoy's, nginx's or Traefik's convention.

None of them decides a right: the decision is the check service's.
"""
