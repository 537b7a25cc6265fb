"""`python -m tool_registry`: serve the Tool Registry (same as `agentmesh serve registry`)."""

from tool_registry.server import main

main()
