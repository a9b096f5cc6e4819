-- A message's labels changed by a user (MessageFlagsChanged with `labels`, the AgentMail dialect's
-- add_labels / remove_labels): the latest change wins, and a send's own labels no longer apply.
ALTER TABLE messages ADD COLUMN labels_changed_at timestamptz;
