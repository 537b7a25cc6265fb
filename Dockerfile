# One image for every role of the mesh: registry, agents, example tools and the
# scripted model. AGENTMESH_ROLE (set by the Helm chart) chooses what it serves:
#   docker run -e AGENTMESH_ROLE=registry -e REDIS_URL=redis://redis:6379/0 agentmesh
# The filesystem is read-only at run time except /tmp (an emptyDir in the chart).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with the project and its pinned dependencies ---------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/agentmesh
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY agentmesh ./agentmesh
COPY agents ./agents
COPY tool_registry ./tool_registry
COPY memory ./memory
# Every dependency is pinned (==) in pyproject.toml; pip byte-compiles on install,
# so nothing needs to write .pyc files at run time.
RUN /opt/agentmesh/bin/pip install . \
 && /opt/agentmesh/bin/agentmesh version

# --- runtime: the virtualenv and the example tools; no compilers, no pip cache -
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="agentmesh" \
      org.opencontainers.image.description="gRPC micro-agent mesh: registry, agents, tools (AGENTMESH_ROLE)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/agentmesh/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN groupadd --system --gid 10001 agentmesh \
 && useradd --system --uid 10001 --gid agentmesh --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin agentmesh
# Owned by root and not writable by the service user.
COPY --from=build /opt/agentmesh /opt/agentmesh
COPY examples /app/examples
# The examples are not pip-installed: byte-compile them here (read-only at run time, and
# PYTHONDONTWRITEBYTECODE) so a tool does not compile its modules at every start.
RUN python -m compileall -q /app/examples
WORKDIR /app
USER 10001:10001
# gRPC: registry 50051, agents 50061, tools 50071; HTTP side listeners (+1000);
# plaintext health under mTLS (+2000); the scripted model's HTTP API 50099.
EXPOSE 50051 50061 50071 51051 51061 51071 52051 52061 52071 50099 50080
ENTRYPOINT ["agentmesh", "serve"]
