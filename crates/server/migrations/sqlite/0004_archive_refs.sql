-- XEP-0308 corrections and XEP-0424 retractions name their original by the message's `id`
-- attribute or XEP-0359 origin-id. They were found by walking the conversation newest first
-- inside the archive writer's transaction: a retraction naming an id that does not exist
-- walked the whole conversation while every other account's archiving waited. They are now
-- found by these indexes, on a reader, before the write is queued. The keys start with the
-- owner and the other party, so an insert touches the pages of its own conversation only.
CREATE INDEX archive_by_msg_id ON archive (owner, with_bare, msg_id) WHERE msg_id IS NOT NULL;
CREATE INDEX archive_by_origin_id ON archive (owner, with_bare, origin_id)
    WHERE origin_id IS NOT NULL;
-- The corrections of a retracted original, which are retracted with it.
CREATE INDEX archive_corrections ON archive (corrects) WHERE corrects IS NOT NULL;
