# syntax=docker/dockerfile:1
# dsar-scheduler image: `docker build -t dsar-scheduler .`
#   docker run --rm dsar-scheduler --help
#   docker run ... dsar-scheduler            (the daemon: `dsar run`)
#   docker run ... dsar-scheduler migrate    (any other `dsar` command)
ARG PYTHON_VERSION=3.12

# --- builder: the locked dependencies into /opt/venv, then the project itself -------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
# The same uv as the Makefile pins.
ARG UV_VERSION=0.13.8
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /src
# Dependencies only (their own layer: it is rebuilt only when pyproject.toml or uv.lock change).
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
# Then the project, installed as a wheel (not editable: the runtime stage has no /src).
COPY README.md ./
COPY service ./service
COPY migrations ./migrations
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# --- runtime: the interpreter and the venv, nothing else ----------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can check it; /data is theirs alone.
RUN groupadd --system --gid 10001 dsar \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin dsar \
    && mkdir -p /data \
    && chown 10001:10001 /data \
    && chmod 0700 /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DSAR_DATABASE_URL=sqlite:////data/dsar.db \
    DSAR_STORAGE_URL=file:///data/files \
    DSAR_METRICS_PORT=9471
WORKDIR /data
USER 10001:10001
VOLUME ["/data"]
# /metrics, /healthz and /readyz (DSAR_METRICS_PORT).
EXPOSE 9471
# `dsar healthcheck` asks the local daemon's /healthz on DSAR_METRICS_PORT: exit 0 if healthy.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["dsar", "healthcheck"]
# Exec form: `dsar` is PID 1 and receives SIGTERM itself (the daemon stops cleanly on it).
ENTRYPOINT ["dsar"]
CMD ["run"]
