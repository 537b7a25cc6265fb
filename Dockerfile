# One image for every role of the mesh: registry, agents, example tools and the
# scripted model. AGENTMESH_ROLE (set by the Helm chart) chooses what it serves.

# --- build: wheels for the project and its dependencies -----------------------
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY agentmesh ./agentmesh
COPY agents ./agents
COPY tool_registry ./tool_registry
COPY memory ./memory
RUN pip wheel --wheel-dir /wheels .

# --- runtime: no compilers, no build tools, non-root ---------------------------
FROM python:3.11-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 agentmesh \
 && useradd --system --uid 10001 --gid agentmesh --home-dir /nonexistent --shell /usr/sbin/nologin agentmesh
COPY --from=build /wheels /wheels
# Only the wheels built above are installable (--no-index): versions are pinned by pyproject.toml.
RUN pip install --no-index --find-links=/wheels /wheels/grpc_agent_mesh-*.whl && rm -rf /wheels
COPY examples /app/examples
WORKDIR /app
USER 10001:10001
EXPOSE 50051 50061 50071 51051 51061 51071
ENTRYPOINT ["agentmesh", "serve"]
