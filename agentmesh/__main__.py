from agentmesh.cli.main import main

main()
