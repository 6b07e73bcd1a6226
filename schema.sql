-- entitlements: the whole schema. Idempotent: applied at every start.
-- Every statement must be safe to run again on a database that already has it.
--
-- Identifiers (ids, subjects, resources, types, sources) are COLLATE "C": byte
-- order, whatever the database's locale. The validator allows only ASCII in them,
-- so nothing sorts differently, but comparisons are memcmp instead of strcoll
-- (index maintenance during a bulk import is about 10% cheaper), and an operating
-- system upgrade that changes the locale's rules cannot corrupt the indexes.

-- One global, monotonic data revision. Every write bumps it as the last step of
-- its transaction, so the row lock orders commits by revision: a reader whose
-- snapshot shows revision R sees every write up to R and none after.
CREATE TABLE IF NOT EXISTS ent_revision (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    value     bigint  NOT NULL
);
INSERT INTO ent_revision (singleton, value) VALUES (true, 0) ON CONFLICT DO NOTHING;
-- The change log keeps what came after changes_floor; older entries are pruned
-- (ENTITLEMENTS_CHANGES_RETENTION). A reader asking from before the floor is told
-- "everything changed".
ALTER TABLE ent_revision ADD COLUMN IF NOT EXISTS changes_floor bigint NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS resources (
    id         text        COLLATE "C" PRIMARY KEY,
    type       text        COLLATE "C" NOT NULL,
    revision   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS resources_type_id ON resources (type, id);

-- Direct parent edges of the resource DAG (a track on several releases, a
-- release under a label). Ancestors are found by walking up from a child, so
-- the child-first primary key is the index a check uses; the parent index is
-- for walking down (listing what a grant on a label covers).
CREATE TABLE IF NOT EXISTS resource_parents (
    child  text COLLATE "C" NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    parent text COLLATE "C" NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    PRIMARY KEY (child, parent)
);
CREATE INDEX IF NOT EXISTS resource_parents_parent ON resource_parents (parent, child);

CREATE TABLE IF NOT EXISTS grants (
    id                  text        COLLATE "C" PRIMARY KEY CHECK (length(id) <= 200),
    subject             text        COLLATE "C" NOT NULL,
    resource            text        COLLATE "C" NOT NULL,
    actions             text[]      NOT NULL,
    territories         text[]      NOT NULL,
    exclude_territories text[]      NOT NULL DEFAULT '{}',
    valid_from          timestamptz,
    valid_until         timestamptz,
    effect              text        NOT NULL DEFAULT 'allow' CHECK (effect IN ('allow', 'deny')),
    attributes          jsonb,
    source              text        COLLATE "C",
    revision            bigint      NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_from IS NULL OR valid_until IS NULL OR valid_from < valid_until)
);
-- Databases made before identifiers were COLLATE "C": convert them once (the
-- indexes on these columns are rebuilt; the tables are not rewritten).
DO $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT c.table_name, c.column_name FROM information_schema.columns c
        WHERE c.table_schema = current_schema()
          AND (c.table_name, c.column_name) IN (('resources', 'id'), ('resources', 'type'),
               ('resource_parents', 'child'), ('resource_parents', 'parent'),
               ('grants', 'id'), ('grants', 'subject'), ('grants', 'resource'),
               ('grants', 'source'))
          AND c.collation_name IS DISTINCT FROM 'C'
        ORDER BY c.table_name DESC, c.column_name
    LOOP
        EXECUTE format('ALTER TABLE %I ALTER COLUMN %I TYPE text COLLATE "C"',
                       col.table_name, col.column_name);
    END LOOP;
END $$;

-- A check reads the grants of a handful of resources (the resource and its
-- ancestors) for a handful of subjects: one index probe per (resource, subject).
-- A resource's shared grants (deals, takedowns: every subject but one user), the
-- unit the cache keeps per resource, are the range subject < 'user:' of the same
-- index: subjects are '*', 'role:...' or 'user:...', so in byte order the users'
-- purchases of a hot track sort after its shared grants and are never read.
CREATE INDEX IF NOT EXISTS grants_resource_subject ON grants (resource, subject);
-- A partial index once served the shared grants; the range above does, and a
-- bulk import maintains one index fewer per row.
DROP INDEX IF EXISTS grants_resource_shared;
-- A user's own grants (purchases) and listing by subject: equality on subject is
-- all these need (a check's (resource, subject) probes use the index above). One
-- column keeps it small: the few shared subjects ('*', 'role:...') repeat on most
-- rows and B-tree deduplication stores each once with a list of rows — a tenth
-- of the size of (subject, resource), and about half the cost per imported row.
CREATE INDEX IF NOT EXISTS grants_subject ON grants (subject);
DROP INDEX IF EXISTS grants_subject_resource;
-- --replace-source removes a feed's grants that a new file no longer carries.
CREATE INDEX IF NOT EXISTS grants_source ON grants (source) WHERE source IS NOT NULL;

-- What each revision touched, for cache invalidation and GET /v1/changes.
-- kind: 'resource' (its grants or parents changed; descendants are affected),
-- 'user' (that user's own grants), 'token' (a revoked jti), 'all' (too much
-- to list: drop everything).
CREATE TABLE IF NOT EXISTS changes (
    revision   bigint      NOT NULL,
    kind       text        NOT NULL,
    key        text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (revision, kind, key)
);

CREATE TABLE IF NOT EXISTS imports (
    id          text        PRIMARY KEY,
    status      text        NOT NULL,
    format      text        NOT NULL,
    source      text,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    report      jsonb       NOT NULL DEFAULT '{}'::jsonb
);

-- The service's own token-signing keys. Lifecycle: 'active' (signs; exactly
-- one), 'published' (no longer signs, still in the JWKS until every token it
-- signed has expired: publish_until), 'retired' (gone from the JWKS).
CREATE TABLE IF NOT EXISTS signing_keys (
    kid           text        PRIMARY KEY,
    alg           text        NOT NULL,
    private_pem   text        NOT NULL,
    public_jwk    jsonb       NOT NULL,
    state         text        NOT NULL CHECK (state IN ('active', 'published', 'retired')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    publish_until timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS signing_keys_one_active ON signing_keys (state) WHERE state = 'active';

-- Tokens issued by token exchange (RFC 8693): who asked, for whom, until when.
-- revoked_at set = refused on every verify (each worker keeps the revoked set in
-- memory, following the change feed; it is reloaded from here at start).
CREATE TABLE IF NOT EXISTS exchanged_tokens (
    jti        text        PRIMARY KEY,
    subject    text        NOT NULL,
    actor      text        NOT NULL,
    audience   text        NOT NULL,
    scope      text        NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS exchanged_tokens_revoked ON exchanged_tokens (expires_at) WHERE revoked_at IS NOT NULL;

-- The SHA-256 of the schema.sql text last applied. A start with the same text runs
-- no DDL: CREATE INDEX / ALTER TABLE ... IF NOT EXISTS lock their table first, so
-- they would wait behind a running import (and every query would queue behind them).
CREATE TABLE IF NOT EXISTS ent_schema (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    digest    text    NOT NULL
);

-- DDEX ERN deal feeds (issue 13): what each sender's messages said about each
-- release, so a later message can replace it (entitlements/store/ddex.py).
-- One row per (sender, release) as the sender knows it: release_key is the id the
-- last message named it by; ddex_release_aliases holds every id it was ever named
-- by (ICPN, GRid, ISRC, ProprietaryId), so a message or purge naming it by
-- another of them still finds it. message_created is the MessageCreatedDateTime
-- last applied to it: an older message is stale for it. resource and tracks are
-- where its deals apply and the tracks it lists (each given resource as a
-- parent); state: 'live', 'purged' (a PurgeReleaseMessage) or 'dropped' (a
-- track release no release that carried it carries any more).
CREATE TABLE IF NOT EXISTS ddex_releases (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sender          text        COLLATE "C" NOT NULL,
    release_key     text        COLLATE "C" NOT NULL,
    resource        text        COLLATE "C",
    tracks          text[]      COLLATE "C" NOT NULL DEFAULT '{}',
    state           text        NOT NULL CHECK (state IN ('live', 'purged', 'dropped')),
    message_created timestamptz NOT NULL,
    message_id      text        NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- Two senders may deliver one release: a link one of them still lists stays.
CREATE INDEX IF NOT EXISTS ddex_releases_resource ON ddex_releases (resource)
    WHERE resource IS NOT NULL;
CREATE TABLE IF NOT EXISTS ddex_release_aliases (
    sender     text   COLLATE "C" NOT NULL,
    alias      text   COLLATE "C" NOT NULL,
    release_id bigint NOT NULL REFERENCES ddex_releases (id) ON DELETE CASCADE,
    PRIMARY KEY (sender, alias)
);
CREATE INDEX IF NOT EXISTS ddex_release_aliases_release ON ddex_release_aliases (release_id);
-- Which release each grant from a DDEX message came from: the grants a later
-- message for that release replaces. No foreign key to grants (a grant deleted
-- by hand leaves a link to nothing, which replacing ignores).
CREATE TABLE IF NOT EXISTS ddex_grants (
    grant_id   text   COLLATE "C" PRIMARY KEY,
    release_id bigint NOT NULL REFERENCES ddex_releases (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS ddex_grants_release ON ddex_grants (release_id);
-- Track releases and the releases whose messages carried them (a track release
-- delivered on its own is its own release here): one that no release carries
-- any more loses its grants.
CREATE TABLE IF NOT EXISTS ddex_track_releases (
    release_id       bigint NOT NULL REFERENCES ddex_releases (id) ON DELETE CASCADE,
    track_release_id bigint NOT NULL REFERENCES ddex_releases (id) ON DELETE CASCADE,
    PRIMARY KEY (release_id, track_release_id)
);
CREATE INDEX IF NOT EXISTS ddex_track_releases_track ON ddex_track_releases (track_release_id);

-- Audit of changes (issue 15): every admin write that changed something, who made it
-- (a token's namespaced subject, or cli:<os user>) and, for grants and resources, the
-- values before and after (NULL: it did not exist / it was deleted). Written in the
-- transaction of the change it records (entitlements/store/audit.py). action is one of
-- grant.put, grant.delete, resource.put, import, key.rotate, token.revoke; detail
-- holds the rest (an import's report, a key's kid, a revoked token's jti). Read newest
-- first by id (GET /v1/audit), optionally by actor, resource or grant.
CREATE TABLE IF NOT EXISTS audit_log (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text        COLLATE "C" NOT NULL,
    action    text        NOT NULL,
    resource  text        COLLATE "C",
    grant_id  text        COLLATE "C",
    before    jsonb,
    after     jsonb,
    detail    jsonb
);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor, id);
CREATE INDEX IF NOT EXISTS audit_log_resource ON audit_log (resource, id) WHERE resource IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_log_grant ON audit_log (grant_id, id) WHERE grant_id IS NOT NULL;
