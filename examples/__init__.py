"""Example tool services (see examples/README.md)."""
