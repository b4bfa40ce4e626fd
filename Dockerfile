# The moderation service's image: web, worker, beat and the `moderation` command all run from it.
#   docker build -t comment-moderation .
#   docker run --rm comment-moderation moderation --help
# docker-compose.yml builds it for every app service.

# --- build: compilers are here only, in case a dependency has no wheel for this platform --------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY . .
RUN pip install .

# --- runtime --------------------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VAR_DIR=/app/var \
    MODEL_DIR=/app/var/models \
    HOST=0.0.0.0 \
    PORT=8000

# A fixed, unprivileged uid/gid so files in named volumes keep one owner across rebuilds.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
# Created here, owned by the app user, so that named volumes mounted on them start with that owner.
RUN mkdir -p /app/var/models \
    && chown -R app:app /app

USER app

EXPOSE 8000

CMD ["moderation", "web", "--host", "0.0.0.0"]
