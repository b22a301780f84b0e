"""The ``file`` channel: an atomic file drop into a directory (air-gapped systems pick it up)."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

from jobs.channels.base import Channel, DeliveryResult, Notification
from jobs.channels.config import FileDropConfig


class FileDropChannel(Channel):
    """Writes ``<idempotency key>.json`` atomically (temp file, fsync, rename, fsync dir)."""

    kind = "file"

    def __init__(self, config: FileDropConfig, base_dir: Path | None = None):
        directory = Path(config.directory)
        self.directory = (
            directory if directory.is_absolute() else (base_dir or Path.cwd()) / directory
        )
        self.target = str(self.directory)

    def path_for(self, notification: Notification) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", notification.idempotency_key)
        return self.directory / f"{safe}.json"

    def send(self, notification: Notification) -> DeliveryResult:
        started = time.monotonic()
        final = self.path_for(notification)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(notification.to_json(), handle, indent=2, sort_keys=True)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, final)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            return DeliveryResult(self.kind, self.target, False, 1, f"{type(exc).__name__}: {exc}",
                                  time.monotonic() - started)  # fmt: skip
        return DeliveryResult(self.kind, self.target, True, 1, f"wrote {final.name}",
                              time.monotonic() - started)  # fmt: skip
