# Redis for the compose profiles "scale" and "ha" (message queue and shared hub state; in "ha" also the Sentinels),
# from Debian's package so it builds on the same local base image as the server when no container registry is
# reachable.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# Versions follow the base image's Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data \
    && chown redis:redis /data

# The package creates the redis system user; its UID is picked at install time, so it has no fixed number.
# hadolint ignore=DL3066
USER redis
WORKDIR /data
VOLUME /data
EXPOSE 6379
# Reachable only on the compose network (no published port). The append-only file keeps channel
# history across a Redis restart.
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data", "--appendonly", "yes"]
