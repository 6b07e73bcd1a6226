-- entitlements: the whole schema. Idempotent: applied at every start.
-- Every statement must be safe to run again on a database that already has it.

-- One global, monotonic data revision. Every write bumps it as the last step of
-- its transaction, so the row lock orders commits by revision: a reader whose
-- snapshot shows revision R sees every write up to R and none after.
CREATE TABLE IF NOT EXISTS ent_revision (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    value     bigint  NOT NULL
);
INSERT INTO ent_revision (singleton, value) VALUES (true, 0) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS resources (
    id         text        PRIMARY KEY,
    type       text        NOT NULL,
    revision   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS resources_type_id ON resources (type, id);

-- Direct parent edges of the resource DAG (a track on several releases, a
-- release under a label). Ancestors are found by walking up from a child, so
-- the child-first primary key is the index a check uses; the parent index is
-- for walking down (listing what a grant on a label covers).
CREATE TABLE IF NOT EXISTS resource_parents (
    child  text NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    parent text NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    PRIMARY KEY (child, parent)
);
CREATE INDEX IF NOT EXISTS resource_parents_parent ON resource_parents (parent, child);

CREATE TABLE IF NOT EXISTS grants (
    id                  text        PRIMARY KEY CHECK (length(id) <= 200),
    subject             text        NOT NULL,
    resource            text        NOT NULL,
    actions             text[]      NOT NULL,
    territories         text[]      NOT NULL,
    exclude_territories text[]      NOT NULL DEFAULT '{}',
    valid_from          timestamptz,
    valid_until         timestamptz,
    effect              text        NOT NULL DEFAULT 'allow' CHECK (effect IN ('allow', 'deny')),
    attributes          jsonb,
    source              text,
    revision            bigint      NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_from IS NULL OR valid_until IS NULL OR valid_from < valid_until)
);
-- A check reads the grants of a handful of resources (the resource and its
-- ancestors) for a handful of subjects: one index probe per (resource, subject).
CREATE INDEX IF NOT EXISTS grants_resource_subject ON grants (resource, subject);
-- A resource's shared grants (deals, takedowns: every subject but one user), the
-- unit the cache keeps per resource, without reading a hot track's purchases.
CREATE INDEX IF NOT EXISTS grants_resource_shared ON grants (resource, subject)
    WHERE NOT starts_with(subject, 'user:');
-- A user's own grants (purchases) and listing by subject.
CREATE INDEX IF NOT EXISTS grants_subject_resource ON grants (subject, resource);
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
