# syntax=docker/dockerfile:1.7
#
# dr's production image: `dr serve` as a non-root user under tini, with the PostgreSQL tools of every major
# version it may meet. docs/container.md describes the build arguments, the filesystem layout (read-only root,
# one volume), the secrets and the health check.
#
#   docker build -t dr .                                          # clients and servers of PostgreSQL 14-18
#   docker build --build-arg PG_MAJORS="16 17" --build-arg DRILL_SERVER=false -t dr:slim .

ARG RUST_VERSION=1.95
# Debian 13: Debian 12's regular security support ended in June 2026, and the release workflow's scan fails on
# fixable vulnerabilities, so the image follows the current stable release.
ARG DEBIAN_SUITE=trixie

# ---- build: dependencies are compiled from cargo-chef's recipe (Cargo.toml and Cargo.lock only), so a change
# to dr's sources rebuilds dr alone; BuildKit cache mounts keep the crate downloads between builds.
FROM rust:${RUST_VERSION}-slim-${DEBIAN_SUITE} AS chef
RUN cargo install cargo-chef --version 0.1.78 --locked
# Cargo.toml keeps line tables in release builds for local profiling; the image drops the debug info (150 MB
# of the binary's 190) and keeps the symbols, so a backtrace still names functions. Set here, so the cooked
# dependencies and the final build share one profile and nothing is compiled twice.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked --bin dr \
    && install -m 0755 target/release/dr /usr/local/bin/dr
# Shell completions and the man page, generated from the binary's own command-line definition (so they always
# match it), in the places bash-completion, zsh, fish and man look.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN install -d /out/bash-completion/completions /out/zsh/vendor-completions /out/fish/vendor_completions.d \
        /out/man/man1 \
    && dr completions bash > /out/bash-completion/completions/dr \
    && dr completions zsh > /out/zsh/vendor-completions/_dr \
    && dr completions fish > /out/fish/vendor_completions.d/dr.fish \
    && dr man | gzip -9n > /out/man/man1/dr.1.gz

# ---- runtime: Debian slim with only what dr runs.
FROM debian:${DEBIAN_SUITE}-slim AS runtime
ARG DEBIAN_SUITE
# The PostgreSQL majors whose tools are installed: dr picks the pg_dump/pg_restore of the server's major (a
# newer pg_dump can dump an older server, never the reverse), so list every major your databases run.
ARG PG_MAJORS="14 15 16 17 18"
# true: also the server binaries (initdb, postgres) of each major, for drills into an embedded scratch cluster.
# false: clients only; drills then need [drill] scratch_url (docs/drills.md).
ARG DRILL_SERVER=true
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/example/dr
ARG CREATED=unknown

LABEL org.opencontainers.image.title="dr" \
      org.opencontainers.image.description="Backup and disaster recovery for a PostgreSQL-backed web site: streaming encrypted backups, restore drills, scripted recovery" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The PGDG repository (apt.postgresql.org) has every supported major for every Debian release; its signing key
# ships in Debian's postgresql-common, so nothing is fetched unsigned. Installing a server package must not
# create a "main" cluster in the image. Package versions are not pinned: the image is rebuilt for security
# fixes, and the PGDG repository keeps only the newest minor release anyway.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata tini postgresql-common \
    && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${DEBIAN_SUITE}-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list \
    && sed -ri 's/^#?\s*create_main_cluster\s*=.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf \
    && apt-get update \
    && packages=() \
    && for major in ${PG_MAJORS}; do \
         packages+=("postgresql-client-${major}"); \
         if [ "${DRILL_SERVER}" = "true" ]; then packages+=("postgresql-${major}"); fi; \
       done \
    && apt-get install -y --no-install-recommends "${packages[@]}" \
    && for major in ${PG_MAJORS}; do /usr/lib/postgresql/"${major}"/bin/pg_dump --version; done \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*

# A fixed UID/GID, so volume and secret file ownership can be set on the host before the first start.
# /var/lib/dr is the one writable place (state, reports, temporary files, a local repository); the image's
# copy seeds a new named volume with the right owner.
RUN groupadd --system --gid 10001 dr \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/dr --no-create-home --shell /usr/sbin/nologin dr \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/dr /var/lib/dr/state /var/lib/dr/tmp /var/lib/dr/reports \
    && install -d -m 0755 /etc/dr

COPY --from=builder /usr/local/bin/dr /usr/local/bin/dr
COPY --from=builder /out/ /usr/share/

ENV DR_CONFIG=/etc/dr/dr.toml \
    HOME=/var/lib/dr \
    TMPDIR=/var/lib/dr/tmp \
    RUST_LOG=info

USER 10001:10001
WORKDIR /var/lib/dr
EXPOSE 9187

# The image has no curl: dr asks its own /healthz, at the [service] listen of the mounted configuration.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["dr", "healthcheck", "--quiet"]

# tini is PID 1: it forwards SIGTERM to dr, which lets running jobs finish within [service] grace, and it reaps
# the processes dr's children leave behind (a drill's postgres). Give the container a stop timeout longer than
# [service] grace (compose: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "dr"]
CMD ["serve"]
