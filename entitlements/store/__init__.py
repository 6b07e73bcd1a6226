"""Storage adapters: Postgres (asyncpg), the change follower, the embedded server.

One module per concept, each holding its own SQL: ``checks`` (reads behind checks
and listings), ``grants`` (the catalogue), ``changes`` (revision, change log),
``graph`` (the resource graph's limits), ``imports`` and ``import_writer`` (bulk
import), ``keys`` (signing keys), ``tokens`` (exchanged tokens), ``schema``,
``locks`` (every advisory lock key), ``pool`` (the pool, errors). ``postgres``
composes the API's adapters on one pool. ``results`` and ``import_rows`` are
plain values the service may use without loading a driver. The service reaches
all of them through ``entitlements.service.ports``.
"""
