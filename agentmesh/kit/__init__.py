"""The service kit: configuration, bootstrap, errors, auth, telemetry, channels.

The bottom layer: it imports nothing of memory, tool_registry, agents or the application.
"""
