# syntax=docker/dockerfile:1
# The mas runtime image: `mas api` (gateway) and `mas worker` (agents) run from it.
# Built by compose.yaml; standalone: `docker build -t mas-runtime:local .`

# uv, pinned to the version that wrote uv.lock.
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM python:3.11-slim

COPY --from=uv /uv /uvx /bin/

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app

# Dependencies first (cached until pyproject.toml or uv.lock changes); --locked fails the
# build when uv.lock is out of date instead of resolving something else.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --all-extras --no-dev --no-install-project

# Then the project itself: `mas`, installed editable, and the application's `agents`
# folder beside it (importable from /app through the editable install, as in the repository).
COPY pyproject.toml uv.lock README.md ./
COPY mas ./mas
COPY agents ./agents
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --all-extras --no-dev

ENV PATH="/app/.venv/bin:${PATH}"

# Run unprivileged; the code and the environment stay root-owned (read-only to it).
RUN useradd --system --uid 10001 --create-home mas
USER mas

EXPOSE 8000
CMD ["mas", "api"]
