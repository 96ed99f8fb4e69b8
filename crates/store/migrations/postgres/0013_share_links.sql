-- Public links to one image, made by its owner (off until then). The token
-- is the link itself: long, random, unguessable; a revoked or deleted link
-- is gone. Links leave with their image or their account.
CREATE TABLE share_links (
    token TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    asset_id TEXT NOT NULL UNIQUE REFERENCES assets(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);
CREATE INDEX share_links_owner ON share_links(owner_id);
