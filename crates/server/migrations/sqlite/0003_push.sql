-- XEP-0357 Push Notifications: the app servers ("XMPP Push Services") an account's clients asked
-- this server to notify while the account has no session. 0002 is the message archive.
--
-- Owned by the account (ON DELETE CASCADE, and deleted explicitly by delete_account), STRICT like
-- every other table. Never edit after a release; add a new version instead.
CREATE TABLE push_registrations (
    owner   TEXT    NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    -- The push service's JID, normalised (a domain, bare or full JID, local or remote).
    service TEXT    NOT NULL,
    -- The pubsub node the app server provisioned for this device.
    node    TEXT    NOT NULL,
    -- The XEP-0004 publish-options form as sent back in every publish (serialised, sanitised,
    -- bounded in size by the server), or NULL without one. It may hold the app server's secret.
    options TEXT,
    -- Per-owner order of the latest enable: when an account is at its limit, the registration
    -- enabled longest ago is the one replaced.
    seq     INTEGER NOT NULL CHECK (seq > 0),
    PRIMARY KEY (owner, service, node)
) STRICT, WITHOUT ROWID;
