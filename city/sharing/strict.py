"""The strict pydantic base of the sharing config models: an unknown key is an error.

Subscriptions and sharing policies both build on it (grants set their own, frozen, config).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
