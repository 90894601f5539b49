-- A user's own instructions for the model, added to the system prompt of every turn of their
-- chats inside <user-instructions> … </user-instructions> (spec/engine.md §12.2).
ALTER TABLE users ADD COLUMN custom_prompt text NOT NULL DEFAULT '';
