-- Encryption at rest, the message archive (XEP-0313) and an encrypted offline store.
--
-- Stanzas are stored only as AES-256-GCM ciphertext (`payload`), sealed with a data key whose id
-- is beside it. Data keys are stored only wrapped by the key-encryption key, which never enters
-- the database. What stays in clear is what queries filter on: owner, ids, time, the other
-- party's address and the direction.

-- Data keys, wrapped by the key-encryption key. Exactly one is 'active' (new records); 'retiring'
-- keys still open old records until the background re-encryption has moved them, and are then
-- deleted (which makes any copy of those old records in free pages or backups unreadable).
CREATE TABLE data_keys (
    id              INTEGER PRIMARY KEY,
    -- The fingerprint of the key-encryption key that wrapped it: a wrong key file is reported as
    -- such instead of as a corrupt database.
    kek_id          TEXT    NOT NULL,
    wrapped         BLOB    NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('active', 'retiring'))
) STRICT;

CREATE UNIQUE INDEX data_keys_one_active ON data_keys (state) WHERE state = 'active';

-- Every account's message archive. `seq` orders it (and never repeats); `id` is the XEP-0359
-- stanza-id clients see and page with.
CREATE TABLE archive (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    owner         TEXT    NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    id            TEXT    NOT NULL,
    stamp_unix_ms INTEGER NOT NULL,
    -- The other party: bare JID and resource ('' when none), for the MAM 'with' filter.
    with_bare     TEXT    NOT NULL,
    with_resource TEXT    NOT NULL,
    -- 1: the owner sent it; 0: the owner received it.
    outgoing      INTEGER NOT NULL CHECK (outgoing IN (0, 1)),
    -- The message's own 'id' attribute and XEP-0359 origin-id, for XEP-0308 corrections and
    -- XEP-0424 retractions, which refer to the original by them.
    msg_id        TEXT,
    origin_id     TEXT,
    -- XEP-0308: the seq of the message this one corrects.
    corrects      INTEGER,
    -- XEP-0424: 1 once the payload was replaced by a tombstone.
    retracted     INTEGER NOT NULL DEFAULT 0 CHECK (retracted IN (0, 1)),
    key_id        INTEGER NOT NULL REFERENCES data_keys (id),
    payload       BLOB    NOT NULL,
    UNIQUE (owner, id)
) STRICT;

CREATE INDEX archive_by_owner ON archive (owner, seq);
CREATE INDEX archive_by_with ON archive (owner, with_bare, seq);
CREATE INDEX archive_by_time ON archive (owner, stamp_unix_ms);
-- Corrections and retractions find their original through archive_by_with, newest first: they
-- refer to recent messages, and indexes on the clients' random ids would make every insert
-- write pages all over the file.
-- Retention walks by time over all accounts; re-encryption by key.
CREATE INDEX archive_by_stamp ON archive (stamp_unix_ms);
CREATE INDEX archive_by_key ON archive (key_id);

-- XEP-0313 archiving preferences; accounts without a row use the server's default.
CREATE TABLE archive_prefs (
    owner        TEXT NOT NULL PRIMARY KEY REFERENCES accounts (jid) ON DELETE CASCADE,
    default_mode TEXT NOT NULL CHECK (default_mode IN ('always', 'never', 'roster'))
) STRICT, WITHOUT ROWID;

CREATE TABLE archive_pref_jids (
    owner TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    jid   TEXT NOT NULL,
    mode  TEXT NOT NULL CHECK (mode IN ('always', 'never')),
    PRIMARY KEY (owner, jid)
) STRICT, WITHOUT ROWID;

-- The offline store, now encrypted. A message that is also archived is stored once: the row
-- points at its archive entry. Otherwise the row holds its own sealed payload.
DROP INDEX offline_messages_by_owner;
ALTER TABLE offline_messages RENAME TO offline_messages_v1;

CREATE TABLE offline_messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    owner         TEXT    NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    id            TEXT    NOT NULL,
    stamp_unix_ms INTEGER NOT NULL,
    archive_seq   INTEGER REFERENCES archive (seq) ON DELETE CASCADE,
    key_id        INTEGER REFERENCES data_keys (id),
    payload       BLOB,
    CHECK ((archive_seq IS NULL) = (payload IS NOT NULL)),
    CHECK ((key_id IS NULL) = (payload IS NULL)),
    UNIQUE (owner, id)
) STRICT;

CREATE INDEX offline_messages_by_owner ON offline_messages (owner, seq);
CREATE INDEX offline_messages_by_key ON offline_messages (key_id);
-- Rows of offline_messages_v1 (plaintext, from before this version) are sealed into the new
-- table at the first unlock and the old table is then emptied.
