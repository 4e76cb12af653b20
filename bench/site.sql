-- Benchmark data: a photo-sharing site ("isntgram") at a chosen scale, generated set-based.
--
-- Usage: psql -v ON_ERROR_STOP=1 -v posts=N -f bench/site.sql DBNAME
-- About 6.9 KB of database per post, indexes included (bench/run.sh: 155000 posts per GB); users = posts / 4;
-- per post on average 7 comments and 15 likes; 20 follows per user; thumbnails average 1.9 KB.
--
-- What makes it realistic rather than filler: captions and comments are drawn word by word from a mixed
-- vocabulary (English, French, German, Polish, Japanese, emoji), so they compress like text, not like
-- repeated strings; EXIF-like jsonb differs per photo; thumbnails are small JPEG-like blobs (a shared
-- header, a unique high-entropy body and a flat low-entropy region); numeric, timestamp, array and boolean
-- columns; btree, unique, expression and GIN indexes; foreign keys. Tables are loaded first and indexed and
-- constrained afterwards, the way pg_restore builds them.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SET synchronous_commit = off;
SET maintenance_work_mem = '256MB';

-- Users: a quarter of the posts. The pair generators below need :users coprime to 104729 and 7727 (primes).
SELECT u + CASE WHEN u % 104729 = 0 OR u % 7727 = 0 THEN 1 ELSE 0 END AS users
FROM (SELECT greatest(:posts / 4, 100) AS u) AS s \gset

CREATE TABLE users (
    id              bigint NOT NULL,
    username        text NOT NULL,
    display_name    text NOT NULL,
    email           text NOT NULL,
    bio             text,
    website         text,
    settings        jsonb NOT NULL,
    is_verified     boolean NOT NULL DEFAULT false,
    follower_count  integer NOT NULL DEFAULT 0,
    creator_balance numeric(12, 2) NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    last_seen_at    timestamptz
);

CREATE TABLE posts (
    id            bigint NOT NULL,
    user_id       bigint NOT NULL,
    caption       text,
    hashtags      text[] NOT NULL DEFAULT '{}',
    location_name text,
    latitude      numeric(9, 6),
    longitude     numeric(9, 6),
    aspect_ratio  numeric(6, 4) NOT NULL,
    exif          jsonb,
    thumbnail     bytea NOT NULL,
    like_count    integer NOT NULL DEFAULT 0,
    comment_count integer NOT NULL DEFAULT 0,
    visibility    text NOT NULL DEFAULT 'public',
    taken_at      timestamptz,
    created_at    timestamptz NOT NULL,
    edited_at     timestamptz
);

CREATE TABLE comments (
    id         bigint NOT NULL,
    post_id    bigint NOT NULL,
    user_id    bigint NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL,
    deleted    boolean NOT NULL DEFAULT false
);

CREATE TABLE likes (
    post_id    bigint NOT NULL,
    user_id    bigint NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE follows (
    follower_id bigint NOT NULL,
    followee_id bigint NOT NULL,
    created_at  timestamptz NOT NULL
);

-- Word lists. A temporary table: the generator's, not the site's.
CREATE TEMP TABLE vocab AS
SELECT ARRAY[
    'the', 'a', 'and', 'of', 'in', 'at', 'with', 'my', 'our', 'this', 'today', 'finally', 'best', 'golden',
    'hour', 'sunset', 'sunrise', 'morning', 'coffee', 'mountains', 'lake', 'beach', 'city', 'street', 'night',
    'lights', 'weekend', 'trip', 'friends', 'family', 'dog', 'cat', 'garden', 'flowers', 'spring', 'autumn',
    'winter', 'summer', 'rain', 'snow', 'fog', 'clouds', 'view', 'from', 'top', 'old', 'town', 'market',
    'bread', 'pasta', 'dinner', 'brunch', 'walk', 'hike', 'bike', 'train', 'window', 'film', 'shot', 'on',
    'iphone', '35mm', 'portrait', 'landscape', 'light', 'shadows', 'colours', 'blue', 'green', 'red', 'quiet',
    'little', 'big', 'new', 'favourite', 'place', 'again', 'never', 'forget', 'love', 'missing', 'home',
    'café', 'crème', 'brûlée', 'déjà', 'vu', 'fête', 'été', 'forêt', 'plage', 'château', 'très', 'belle',
    'journée', 'Straße', 'Grüße', 'schön', 'Frühling', 'Bäckerei', 'Müsli', 'Gemütlichkeit', 'Fußweg',
    'Kraków', 'Gdańsk', 'Łódź', 'zdjęcie', 'piękny', 'dzień', 'niedziela', 'jezioro', 'góry',
    'São', 'Paulo', 'coração', 'manhã', 'año', 'niño', 'señor', 'mañana', 'sol',
    '東京', '夕焼け', '桜', '写真', '海', '山', '猫', 'ラーメン', '週末', '散歩', 'カメラ', '京都',
    '📷', '🌅', '☕', '🐶', '🐱', '🌸', '🍝', '✨', '❤️', '🔥', '🏔️', '🌊', '🚲', '🎞️',
    'Ærø', 'Ålesund', 'fjord', 'Reykjavík', 'Þingvellir', 'İstanbul', 'Ελλάδα', 'θάλασσα', 'Москва', 'зима'
] AS words,
ARRAY['#photography', '#sunset', '#travel', '#nature', '#streetphotography', '#foodie', '#35mm', '#filmisnotdead',
      '#dogsofisntgram', '#catsofisntgram', '#東京', '#café', '#müsli', '#kraków', '#goldenhour', '#landscape',
      '#portrait', '#blackandwhite', '#architecture', '#mountains', '#sea', '#spring', '#autumn', '#winter',
      '#summer', '#coffee', '#brunch', '#hiking', '#cycling', '#urban'] AS tags,
ARRAY['Zoë', 'Łukasz', '花子', 'José', 'Ørjan', 'Anaïs', 'Jürgen', 'Søren', 'Maëlle', 'Ágnes', 'Ömer', 'Chloé',
      'Björk', 'Siobhán', 'Nuño', 'Kenji', 'Aiko', 'Dmitri', 'Eleni', 'Priya', 'Mateus', 'Olga', 'Tomás',
      'Wiktoria', 'Ingrid', 'Yusuf', 'Camille', 'Hannah', 'Liam', 'Noah'] AS first_names,
ARRAY['Ångström', 'Wójcik', '山田', 'Müller', 'Dupont', 'García', 'Kowalski', 'Nakamura', 'Ivanova',
      'Papadopoulos', 'Silva', 'Jensen', 'O''Brien', 'Øvergaard', 'Núñez', 'Schröder', 'Lefèvre', 'Yılmaz',
      'Sato', 'Novák', 'Rossi', 'Smith', 'Nguyễn', 'Kim', 'Haddad'] AS last_names,
ARRAY['Paris', 'Kraków', 'Tōkyō', 'Lisboa', 'Reykjavík', 'Zürich', 'München', 'København', 'New York',
      'São Paulo', 'İstanbul', 'Αθήνα', 'Kyōto', 'Barcelona', 'Ålesund', 'Montréal', 'Berlin', 'Oslo',
      'Edinburgh', 'Wien'] AS places,
ARRAY['Canon', 'Nikon', 'Sony', 'Fujifilm', 'Apple', 'Google', 'Leica', 'Olympus', 'Panasonic', 'Samsung'] AS makes,
ARRAY['EOS R6', 'Z6 II', 'α7 IV', 'X100V', 'iPhone 15 Pro', 'Pixel 8', 'Q2', 'OM-1', 'S5 II', 'Galaxy S24']
    AS models,
ARRAY['RF 24-105mm F4 L', 'NIKKOR Z 35mm f/1.8 S', 'FE 50mm F1.8', 'XF 23mm F2', 'back camera 6.86mm f/1.78',
      'Summilux 28mm f/1.7', 'M.Zuiko 12-40mm F2.8'] AS lenses;

-- A fixed "JPEG header" (quantization and Huffman tables are the same for every file of one encoder).
CREATE TEMP TABLE jpeg AS
SELECT '\xffd8ffe000104a46494600010101004800480000ffdb0043'::bytea
       || (SELECT string_agg(sha256(int4send(g)), ''::bytea ORDER BY g) FROM generate_series(1, 10) AS g)
       || '\xffc4001f0000010501010101010100000000000000000102030405060708090a0bffda000c03010002110311003f00'::bytea
       AS header;

INSERT INTO users (id, username, display_name, email, bio, website, settings, is_verified, follower_count,
                   creator_balance, created_at, last_seen_at)
SELECT i,
       lower(v.first_names[1 + i % 30]) || '_' || i,
       v.first_names[1 + (i * 7) % 30] || ' ' || v.last_names[1 + (i * 13) % 25],
       'user' || i || '@' || (ARRAY['example.com', 'mail.example.org', 'posteo.example', 'example.jp'])[1 + i % 4],
       CASE WHEN i % 5 = 0 THEN NULL ELSE
           (SELECT string_agg(w.words[1 + floor(random() * array_length(w.words, 1))::int], ' ')
              FROM generate_series(1, 4 + i % 12), vocab AS w) END,
       CASE WHEN i % 7 = 0 THEN 'https://' || lower(v.last_names[1 + i % 25]) || i || '.example.net/' END,
       jsonb_build_object(
           'theme', (ARRAY['dark', 'light', 'system'])[1 + i % 3],
           'language', (ARRAY['en', 'fr', 'de', 'pl', 'ja', 'pt', 'es'])[1 + i % 7],
           'notifications', jsonb_build_object('likes', i % 2 = 0, 'comments', i % 3 <> 0,
                                               'email_digest', (ARRAY['daily', 'weekly', 'never'])[1 + i % 3]),
           'private', i % 11 = 0),
       i % 97 = 0,
       floor(random() * random() * 5000)::int,
       round((random() * random() * 2500)::numeric, 2),
       timestamptz '2019-01-01 00:00+00' + random() * interval '1800 days',
       CASE WHEN i % 9 = 0 THEN NULL ELSE timestamptz '2024-01-01 00:00+00' + random() * interval '600 days' END
FROM generate_series(1, :users) AS i, vocab AS v;

INSERT INTO posts (id, user_id, caption, hashtags, location_name, latitude, longitude, aspect_ratio, exif,
                   thumbnail, like_count, comment_count, visibility, taken_at, created_at, edited_at)
SELECT p.i,
       p.owner,
       CASE WHEN p.i % 10 = 0 THEN NULL ELSE
           (SELECT string_agg(w.words[1 + floor(random() * array_length(w.words, 1))::int], ' ')
              FROM generate_series(1, 3 + (p.i * 7) % 25), vocab AS w) END,
       (SELECT coalesce(array_agg(w.tags[1 + floor(random() * 30)::int]), '{}')
          FROM generate_series(1, (p.i * 5) % 6), vocab AS w),
       CASE WHEN p.i % 3 = 0 THEN NULL ELSE v.places[1 + p.i % 20] END,
       CASE WHEN p.i % 3 = 0 THEN NULL ELSE round((random() * 140 - 60)::numeric, 6) END,
       CASE WHEN p.i % 3 = 0 THEN NULL ELSE round((random() * 360 - 180)::numeric, 6) END,
       (ARRAY[1.0, 0.8, 1.3333, 0.75, 1.7778, 0.5625])[1 + p.i % 6],
       CASE WHEN p.i % 8 = 0 THEN NULL ELSE jsonb_build_object(
           'make', v.makes[1 + p.i % 10],
           'model', v.models[1 + p.i % 10],
           'lens', v.lenses[1 + p.i % 7],
           'iso', (ARRAY[50, 100, 200, 400, 800, 1600, 3200, 6400])[1 + floor(random() * 8)::int],
           'aperture', (ARRAY[1.4, 1.8, 2.0, 2.8, 4.0, 5.6, 8.0, 11.0])[1 + floor(random() * 8)::int],
           'exposure', '1/' || (ARRAY[30, 60, 125, 250, 500, 1000, 4000])[1 + floor(random() * 7)::int],
           'focal_length_mm', 12 + floor(random() * 190)::int,
           'flash', random() < 0.1,
           'white_balance', (ARRAY['auto', 'daylight', 'cloudy', 'tungsten'])[1 + p.i % 4],
           'dimensions', jsonb_build_object('width', 4032 + (p.i % 4) * 1024, 'height', 3024 + (p.i % 3) * 512),
           'software', 'isntgram-ios ' || (p.i % 5) || '.' || (p.i % 17) || '.0',
           'orientation', 1 + p.i % 8,
           'captured', to_char(p.taken, 'YYYY:MM:DD HH24:MI:SS')) END,
       -- Thumbnail: shared header, 0.5-1.5 KB of unique high-entropy data, 200-700 bytes of flat colour.
       j.header
           || (SELECT string_agg(sha512(int8send(p.i) || int4send(g)), ''::bytea)
                 FROM generate_series(1, 8 + (p.i * 11) % 17) AS g)
           || decode(repeat(lpad(to_hex((p.i * 37) % 256), 2, '0') || lpad(to_hex((p.i * 91) % 256), 2, '0'),
                            100 + (p.i * 13) % 250), 'hex')
           || '\xffd9'::bytea,
       p.likes,
       0,
       (ARRAY['public', 'public', 'public', 'public', 'followers', 'private'])[1 + p.i % 6],
       CASE WHEN p.i % 8 = 0 THEN NULL ELSE p.taken END,
       p.taken + interval '5 minutes' * (1 + p.i % 200),
       CASE WHEN p.i % 20 = 0 THEN p.taken + interval '2 days' END
FROM (SELECT i,
             1 + (i * 2654435761) % :users AS owner,
             -- Skewed: most posts get a few likes, some get many.
             floor(60 * random() * random())::int AS likes,
             timestamptz '2019-06-01 00:00+00' + random() * interval '1900 days' AS taken
        FROM generate_series(1, :posts) AS i) AS p,
     vocab AS v, jpeg AS j;

INSERT INTO comments (id, post_id, user_id, body, created_at, deleted)
SELECT row_number() OVER (),
       c.post_id,
       1 + (c.post_id * 7919 + c.n * 104729) % :users,
       (SELECT string_agg(w.words[1 + floor(random() * array_length(w.words, 1))::int], ' ')
          FROM generate_series(1, 1 + (c.post_id + c.n) % 14), vocab AS w),
       c.created_at + random() * interval '30 days',
       random() < 0.02
FROM (SELECT p.id AS post_id, p.created_at, n
        FROM posts AS p, generate_series(1, p.like_count / 3 + (p.id * 7) % 6) AS n) AS c;

-- (post_id, user_id) pairs are distinct: :users is coprime to 104729 and larger than like_count (< 60).
INSERT INTO likes (post_id, user_id, created_at)
SELECT p.id, 1 + (p.id * 7919 + n * 104729) % :users, p.created_at + random() * interval '10 days'
FROM posts AS p, generate_series(1, p.like_count) AS n;

INSERT INTO follows (follower_id, followee_id, created_at)
SELECT u.id, 1 + (u.id + n * 7727) % :users, u.created_at + random() * interval '400 days'
FROM users AS u, generate_series(1, (u.id * 7) % 41) AS n
WHERE 1 + (u.id + n * 7727) % :users <> u.id;

UPDATE posts AS p SET comment_count = c.n
FROM (SELECT post_id, count(*) AS n FROM comments GROUP BY post_id) AS c
WHERE c.post_id = p.id;

-- Keys, indexes and constraints after the load.
ALTER TABLE users ADD PRIMARY KEY (id);
CREATE UNIQUE INDEX users_username ON users (lower(username));
CREATE UNIQUE INDEX users_email ON users (email);
ALTER TABLE posts ADD PRIMARY KEY (id);
CREATE INDEX posts_user_recent ON posts (user_id, created_at DESC);
CREATE INDEX posts_exif ON posts USING gin (exif jsonb_path_ops);
CREATE INDEX posts_hashtags ON posts USING gin (hashtags);
ALTER TABLE comments ADD PRIMARY KEY (id);
CREATE INDEX comments_post ON comments (post_id, created_at);
ALTER TABLE likes ADD PRIMARY KEY (post_id, user_id);
CREATE INDEX likes_user ON likes (user_id);
ALTER TABLE follows ADD PRIMARY KEY (follower_id, followee_id);
CREATE INDEX follows_followee ON follows (followee_id);

ALTER TABLE posts ADD FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE comments ADD FOREIGN KEY (post_id) REFERENCES posts (id) ON DELETE CASCADE;
ALTER TABLE comments ADD FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE likes ADD FOREIGN KEY (post_id) REFERENCES posts (id) ON DELETE CASCADE;
ALTER TABLE likes ADD FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE follows ADD FOREIGN KEY (follower_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE follows ADD FOREIGN KEY (followee_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE posts ADD CHECK (visibility IN ('public', 'followers', 'private'));

-- Sequences, as a real schema would have them (owned by the id columns, set past the data).
CREATE SEQUENCE users_id_seq OWNED BY users.id;
CREATE SEQUENCE posts_id_seq OWNED BY posts.id;
CREATE SEQUENCE comments_id_seq OWNED BY comments.id;
ALTER TABLE users ALTER COLUMN id SET DEFAULT nextval('users_id_seq');
ALTER TABLE posts ALTER COLUMN id SET DEFAULT nextval('posts_id_seq');
ALTER TABLE comments ALTER COLUMN id SET DEFAULT nextval('comments_id_seq');
SELECT setval('users_id_seq', (SELECT max(id) FROM users)),
       setval('posts_id_seq', (SELECT max(id) FROM posts)),
       setval('comments_id_seq', (SELECT max(id) FROM comments)) \g /dev/null

VACUUM (ANALYZE) users, posts, comments, likes, follows;
