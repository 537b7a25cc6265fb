"""The operator console: a web app (aiohttp, server-rendered HTML) over the mesh's public APIs.

It is a gRPC client of the registry and the agents and calls them with the signed-in
user's own token; see docs/console.md.
"""
