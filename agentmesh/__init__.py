"""agentmesh: a gRPC micro-agent mesh.

This package is the shared service kit (configuration, server bootstrap, error
map, channels, telemetry, CLI) and the generated public API (`agentmesh.v1`).
"""

__version__ = "0.1.0"
