"""The local mesh: every service of agentmesh as processes on one machine (`agentmesh up`)."""
