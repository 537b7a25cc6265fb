"""tool_registry package."""
