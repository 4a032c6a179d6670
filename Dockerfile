# Signalboard server image: start.sh runs one gunicorn gthread worker as a fixed non-root UID.
# Builds with the classic builder too (no BuildKit-only syntax). Works on the official Python slim
# image and on a plain Debian base with python3-venv (scripts/docker_base_image.sh builds one).
ARG BASE_IMAGE=python:3.11-slim

# Dependencies are built in their own stage: the CA argument below stays out of the final image,
# its trust store and its history.
FROM ${BASE_IMAGE} AS dependencies
# PEM text of extra CA certificates, for build networks that intercept TLS; used only by pip here.
ARG PIP_EXTRA_CA_CERTS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt /tmp/requirements.txt
# A venv works the same on both bases (Debian's system Python refuses pip installs outside one).
RUN if [ -n "$PIP_EXTRA_CA_CERTS" ]; then \
        { cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null || true; \
          printf '%s\n' "$PIP_EXTRA_CA_CERTS"; } > /tmp/pip-ca.pem; \
        export PIP_CERT=/tmp/pip-ca.pem; \
    fi \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm -f /tmp/pip-ca.pem

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=5000

# A real home: gunicorn puts its control socket under $HOME/.gunicorn.
RUN groupadd --system --gid 10001 signalboard \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/signalboard --create-home \
        --shell /usr/sbin/nologin signalboard

# Dependencies before code, so a code change reuses this layer.
COPY --from=dependencies /opt/venv /opt/venv

WORKDIR /app
# Code stays owned by root: the server cannot rewrite itself.
COPY . .
RUN python -m compileall -q .

USER 10001:10001
EXPOSE 5000
# No curl or wget in the image: Python asks /livez. PORT may be overridden at run time.
HEALTHCHECK --interval=10s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('PORT', '5000'), timeout=8)"]
CMD ["./start.sh"]
