"""The agent runtime: domain specs, the plan → act → observe runner, model backends, AgentService.

The import name `agents` is also used by another popular SDK; install agentmesh
(distribution `grpc-agent-mesh`) in its own virtualenv. See docs/decisions.md,
"Agent runtime".
"""
