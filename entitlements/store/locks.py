"""Every Postgres advisory lock the service takes, in one place.

Advisory locks are named by numbers that every process sharing the database must
agree on, and two uses sharing a number wait for each other for no reason (the
signing keys once shared the import lock: while an import ran, a starting worker,
``token mint`` and ``keys rotate`` waited until their pool timeout). So each use
has its own key here, and nothing else in the package writes a key as a literal
(``tests/test_locks.py`` checks both).

Single-key locks (``pg_advisory[_xact]_lock(bigint)``):

==================  ===========  ==========================================  =================
key                 value        taken by, and why                           held
==================  ===========  ==========================================  =================
``SCHEMA``          7418820001   ``PostgresStore.open`` applying schema.sql:  its transaction
                                 two processes starting at once must not
                                 race on ``CREATE ... IF NOT EXISTS``
``GRAPH``           7418820002   ``PostgresCatalog.put_resource`` and         its transaction
                                 resource imports: graph writes one at a
                                 time, so two cannot build a cycle or a
                                 too-deep chain between them
``IMPORT``          7418820003   every import transaction: imports run one    the import's
                                 at a time (no interleaving, no deadlock on   transaction
                                 shared grant ids); waited for at most
                                 ``ENTITLEMENTS_IMPORT_LOCK_WAIT``
``PRUNE``           7418820004   the change-log pruner (try-lock): one        one batch
                                 pruner at a time across workers and hosts
``SIGNING_KEYS``    7418820005   ``PostgresKeyStore.ensure_active`` and       its transaction
                                 ``rotate``: one active key, even when
                                 workers start together
==================  ===========  ==========================================  =================

Two-key locks (``pg_advisory_xact_lock(int, int)``; Postgres keeps them apart from
the single-key ones): ``IMPORT_LIVE_CLASS`` (7418821) with the import id's hash as
the second key marks a running import as alive, held by the import's transaction;
the reaper (``pg_try_advisory_xact_lock`` on the same pair) marks an import failed
only when nobody holds it.

Every lock here is transaction-scoped: none outlives the transaction that took it,
so they hold the same through PgBouncer in transaction pooling mode.
"""

from __future__ import annotations

import enum
from typing import Final


@enum.unique
class AdvisoryLock(enum.IntEnum):
    """A single-key advisory lock (see the table above)."""

    SCHEMA = 7418820001
    GRAPH = 7418820002
    IMPORT = 7418820003
    PRUNE = 7418820004
    SIGNING_KEYS = 7418820005


IMPORT_LIVE_CLASS: Final = 7418821
"""First key of the two-key lock marking an import alive (the second: its id's hash)."""
