-- Zorg core schema for SQLite: accounts, SCRAM credentials, rosters, offline messages, blocklists.
--
-- Every table an account owns refers to accounts(jid) with ON DELETE CASCADE, so that no row can
-- outlive its account even if a future code path forgets to delete it explicitly. Tables are STRICT
-- so that a wrongly typed bind is an error instead of silently stored text.
-- Applied once by sqlx's migrator (recorded in _sqlx_migrations); never edit this file after a
-- release: its checksum is verified at every open. Add 0002_*.sql instead.

-- Local accounts, addressed by their normalised bare JID ("alice@example.org").
CREATE TABLE accounts (
    jid            TEXT    NOT NULL PRIMARY KEY,
    -- The domain part, kept separately so that listing one virtual host uses an index.
    domain         TEXT    NOT NULL,
    -- RFC 6121 §2.6 roster versioning: a per-account counter bumped with every roster change.
    roster_version INTEGER NOT NULL DEFAULT 0 CHECK (roster_version >= 0),
    created_unix_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX accounts_by_domain ON accounts (domain, jid);

-- Salted SCRAM credentials (RFC 5802 §3): never the password. One row per hash function.
CREATE TABLE scram_credentials (
    owner      TEXT    NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    hash       TEXT    NOT NULL CHECK (hash IN ('SHA-1', 'SHA-256')),
    salt       BLOB    NOT NULL,
    iterations INTEGER NOT NULL CHECK (iterations > 0 AND iterations <= 4294967295),
    stored_key BLOB    NOT NULL,
    server_key BLOB    NOT NULL,
    PRIMARY KEY (owner, hash)
) STRICT, WITHOUT ROWID;

-- Roster items with the full server-side subscription state of RFC 6121 Appendix A.
CREATE TABLE roster_items (
    owner             TEXT    NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    contact           TEXT    NOT NULL,
    name              TEXT,
    subscription      TEXT    NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask               INTEGER NOT NULL CHECK (ask IN (0, 1)),
    pending_in        INTEGER NOT NULL CHECK (pending_in IN (0, 1)),
    approved          INTEGER NOT NULL CHECK (approved IN (0, 1)),
    visible           INTEGER NOT NULL CHECK (visible IN (0, 1)),
    pending_in_stanza TEXT,
    PRIMARY KEY (owner, contact)
) STRICT, WITHOUT ROWID;

-- Presence probes look rosters up by contact ("who may see alice's presence?").
CREATE INDEX roster_items_by_contact ON roster_items (contact, owner);

-- Roster groups in a table of their own: a group name may contain any character, so no separator
-- could be safe in a single text column; `position` keeps the client's order.
CREATE TABLE roster_groups (
    owner    TEXT    NOT NULL,
    contact  TEXT    NOT NULL,
    position INTEGER NOT NULL,
    name     TEXT    NOT NULL,
    PRIMARY KEY (owner, contact, position),
    FOREIGN KEY (owner, contact) REFERENCES roster_items (owner, contact) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- Messages stored for an offline account (RFC 6121 §8.5.2.2.1). AUTOINCREMENT so that a seq is
-- never reused: a delete-through from a session that read older messages can then never remove a
-- message that arrived later.
CREATE TABLE offline_messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    owner         TEXT    NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    id            TEXT    NOT NULL,
    stanza        TEXT    NOT NULL,
    stamp_unix_ms INTEGER NOT NULL,
    UNIQUE (owner, id)
) STRICT;

CREATE INDEX offline_messages_by_owner ON offline_messages (owner, seq);

-- XEP-0191 blocklist items: a full JID, bare JID, domain or domain/resource.
CREATE TABLE blocklist_items (
    owner TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    item  TEXT NOT NULL,
    PRIMARY KEY (owner, item)
) STRICT, WITHOUT ROWID;
