-- DEV ONLY: sample data for the try-out stack (compose/dev.yml): a small photo-sharing site, "isntgram".
-- The postgres image runs this once, when its volume is empty (/docker-entrypoint-initdb.d), as the superuser
-- in the database POSTGRES_DB. Plain SQL, no psql meta-commands: tests/it/compose_dev.rs loads the same file
-- into a scratch cluster and checks the counts below.
--
-- 300 users, 1200 posts, 4000 comments, likes, follows, albums and tags; jsonb, bytea, non-ASCII text, a view,
-- a second schema and an application role with a (public, dev-only) password, so that every part of a backup
-- has something to carry.

CREATE ROLE isntgram_app LOGIN PASSWORD 'dev-only-app-password';

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

CREATE TABLE follows (
    follower_id bigint REFERENCES users (id),
    followed_id bigint REFERENCES users (id),
    since       timestamptz NOT NULL,
    PRIMARY KEY (follower_id, followed_id),
    CHECK (follower_id <> followed_id)
);

CREATE TABLE albums (
    id      bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    title   text NOT NULL
);

CREATE TABLE album_posts (
    album_id bigint REFERENCES albums (id) ON DELETE CASCADE,
    post_id  bigint REFERENCES posts (id) ON DELETE CASCADE,
    PRIMARY KEY (album_id, post_id)
);

CREATE TABLE tags (
    post_id bigint REFERENCES posts (id) ON DELETE CASCADE,
    tag     text NOT NULL,
    PRIMARY KEY (post_id, tag)
);

CREATE TABLE avatars (
    user_id   bigint PRIMARY KEY REFERENCES users (id),
    thumbnail bytea NOT NULL
);

CREATE VIEW popular_posts AS
SELECT p.id, p.user_id, p.caption, count(l.user_id) AS likes
FROM posts p LEFT JOIN likes l ON l.post_id = p.id
GROUP BY p.id;

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
FROM generate_series(1, 300) AS i;

INSERT INTO posts (user_id, caption, image_path, exif, created_at)
SELECT 1 + (i * 7) % 300,
       'Sunset nº ' || i || CASE WHEN i % 10 = 0 THEN ' — «best one»' ELSE '' END,
       format('2026/11/%s.svg', lpad((1 + i % 3)::text, 4, '0')),
       jsonb_build_object('iso', 100 * (1 + i % 8), 'lens', '35mm', 'gps', jsonb_build_array(48.85 + i / 1000.0, 2.35)),
       timestamptz '2026-11-01 00:00:00+00' + i * interval '13 minutes'
FROM generate_series(1, 1200) AS i;

INSERT INTO comments (post_id, user_id, body, created_at)
SELECT 1 + (i * 13) % 1200, 1 + (i * 17) % 300,
       (ARRAY['wow', 'très beau', 'すごい!', 'great light', '👍👍'])[1 + i % 5],
       timestamptz '2026-11-02 00:00:00+00' + i * interval '3 minutes'
FROM generate_series(1, 4000) AS i;

INSERT INTO likes (user_id, post_id)
SELECT DISTINCT 1 + (i * 31) % 300, 1 + (i * 37) % 1200 FROM generate_series(1, 6000) AS i;

INSERT INTO follows (follower_id, followed_id, since)
SELECT 1 + (i * 11) % 300, 1 + (i * 29 + 1) % 300, timestamptz '2026-06-01 00:00:00+00' + i * interval '1 hour'
FROM generate_series(1, 2000) AS i
WHERE 1 + (i * 11) % 300 <> 1 + (i * 29 + 1) % 300
ON CONFLICT DO NOTHING;

INSERT INTO albums (user_id, title)
SELECT 1 + i % 300, 'Album ' || i FROM generate_series(1, 100) AS i;

INSERT INTO album_posts (album_id, post_id)
SELECT DISTINCT 1 + i % 100, 1 + (i * 7) % 1200 FROM generate_series(1, 800) AS i;

INSERT INTO tags (post_id, tag)
SELECT DISTINCT 1 + i % 1200, (ARRAY['sunset', 'travel', 'café', 'mer', '写真'])[1 + i % 5]
FROM generate_series(1, 3000) AS i;

INSERT INTO avatars (user_id, thumbnail)
SELECT i, decode(md5(i::text) || md5((i * 2)::text), 'hex') FROM generate_series(1, 300) AS i;

INSERT INTO analytics.daily_uploads (day, uploads)
SELECT date '2026-11-01' + i, 30 + (i * 7) % 20 FROM generate_series(0, 24) AS i;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO isntgram_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO isntgram_app;
GRANT USAGE ON SCHEMA analytics TO isntgram_app;
GRANT SELECT ON analytics.daily_uploads TO isntgram_app;
