"""The base of every model of a file a person writes: domain specs, model scripts, price tables.

Unknown keys are refused (a misspelt field is an error, never silently ignored) and a parsed
file is frozen.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FileModel(BaseModel):
    """A pydantic model of (part of) a file a person writes: unknown keys refused, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
