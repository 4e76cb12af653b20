-- A small photo-sharing site ("isntgram") for `dr demo`: related tables, sequences, jsonb, bytea, non-ASCII
-- text, a second schema, a large object and a role with a password.

CREATE ROLE isntgram_app LOGIN PASSWORD 'demo-only-not-a-secret';

CREATE TABLE users (
    id           bigserial PRIMARY KEY,
    username     text UNIQUE NOT NULL,
    display_name text NOT NULL,
    bio          text,
    settings     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE posts (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id),
    caption    text,
    image_path text NOT NULL,
    exif       jsonb,
    created_at timestamptz NOT NULL
);
CREATE INDEX posts_user_recent ON posts (user_id, created_at DESC);

CREATE TABLE comments (
    id         bigserial PRIMARY KEY,
    post_id    bigint NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    user_id    bigint NOT NULL REFERENCES users (id),
    body       text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE likes (
    user_id bigint REFERENCES users (id),
    post_id bigint REFERENCES posts (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, post_id)
);

CREATE TABLE avatars (
    user_id   bigint PRIMARY KEY REFERENCES users (id),
    thumbnail bytea NOT NULL
);

CREATE SCHEMA analytics;
CREATE TABLE analytics.daily_uploads (
    day     date PRIMARY KEY,
    uploads integer NOT NULL
);

INSERT INTO users (username, display_name, bio, settings, created_at)
SELECT 'user' || i,
       (ARRAY['Zoë Ångström', 'Łukasz Wójcik', '山田 花子', 'Ærøskøbing 📷', 'José Müller'])[1 + i % 5] || ' #' || i,
       CASE WHEN i % 3 = 0 THEN NULL ELSE 'Photos of ' || (ARRAY['mountains', 'cafés', 'straße', 'the sea'])[1 + i % 4] END,
       jsonb_build_object('theme', CASE WHEN i % 2 = 0 THEN 'dark' ELSE 'light' END, 'notifications', i % 4 <> 0),
       timestamptz '2026-01-01 00:00:00+00' + i * interval '7 hours'
FROM generate_series(1, 200) AS i;

INSERT INTO posts (user_id, caption, image_path, exif, created_at)
SELECT 1 + (i * 7) % 200,
       'Sunset nº ' || i || CASE WHEN i % 10 = 0 THEN ' — «best one»' ELSE '' END,
       format('uploads/2026/11/%s.jpg', lpad(i::text, 4, '0')),
       jsonb_build_object('iso', 100 * (1 + i % 8), 'lens', '35mm', 'gps', jsonb_build_array(48.85 + i / 1000.0, 2.35)),
       timestamptz '2026-11-01 00:00:00+00' + i * interval '13 minutes'
FROM generate_series(1, 1000) AS i;

INSERT INTO comments (post_id, user_id, body, created_at)
SELECT 1 + (i * 13) % 1000, 1 + (i * 17) % 200,
       (ARRAY['wow', 'très beau', 'すごい!', 'great light', '👍👍'])[1 + i % 5],
       timestamptz '2026-11-02 00:00:00+00' + i * interval '3 minutes'
FROM generate_series(1, 3000) AS i;

INSERT INTO likes (user_id, post_id)
SELECT DISTINCT 1 + (i * 31) % 200, 1 + (i * 37) % 1000 FROM generate_series(1, 5000) AS i;

INSERT INTO avatars (user_id, thumbnail)
SELECT i, decode(md5(i::text) || md5((i * 2)::text), 'hex') FROM generate_series(1, 200) AS i;

INSERT INTO analytics.daily_uploads (day, uploads)
SELECT date '2026-11-01' + i, 30 + (i * 7) % 20 FROM generate_series(0, 24) AS i;

SELECT lo_from_bytea(0, convert_to('Terms of service, version 1 — accepted ✓', 'UTF8'));

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO isntgram_app;
