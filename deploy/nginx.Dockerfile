# nginx in front of the Signalboard instances (the default stack's `proxy`, the scale profile's `nginx`), from
# Debian's package so it builds on the same local base image as the server when no container registry is reachable.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# Versions follow the base image's Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log

COPY nginx.conf /tmp/signalboard.conf
# The instances behind it, space-separated host:port; they replace the config's `server web:5000;` line.
ARG UPSTREAMS=web:5000
RUN awk -v upstreams="${UPSTREAMS}" \
        '$0 == "    server web:5000;" { n = split(upstreams, hosts, " "); for (i = 1; i <= n; i++) print "    server " hosts[i] ";"; next } { print }' \
        /tmp/signalboard.conf > /etc/nginx/conf.d/signalboard.conf \
    && rm /tmp/signalboard.conf \
    && grep -q "^    server " /etc/nginx/conf.d/signalboard.conf

EXPOSE 8080
# SIGQUIT lets nginx finish the requests in flight.
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
