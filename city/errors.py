"""Errors shared by the core's config parsers."""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A city config problem, with the file and the path inside it."""

    def __init__(self, file: str | Path, problems: list[tuple[str, str]]):
        self.file = str(file)
        self.problems = problems
        lines = [f"{self.file}: {where or '<top>'}: {what}" for where, what in problems]
        super().__init__("\n".join(lines))
