"""The CSV drop (`cityrelay publish --dept D --csv FILE`): each row of a legacy system's file
becomes an event through the department's column mapping (``csv:`` in its config,
city/connectors.py), validated by the same `EventCatalog.accept` as ingest; a bad row is
dead-lettered with the file name and its line number, and the rest are published.

Running the same file again publishes nothing twice. Every row has a deterministic id:
``csv-`` + SHA-256 of the department, the type and the row's own id when the mapping names an
id column, else of the department, the type and the row's content (so a nightly file that
grows publishes only its new rows; two identical rows are one event). Within the dedupe window
ingest drops a repeat anyway; beyond it a marker per published row (``{p}:csv:{dept}:{id}``,
kept ``remember_days``) skips it here. The marker is written after the XADD, so a run
interrupted between the two publishes that row again and ingest drops the copy.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from redis import Redis

from city.catalog import EventCatalog, InvalidEvent
from city.connectors import CsvMapping
from city.mapping import MappingError, derived_id, map_record, row_lookup
from queues.keys import Keys
from queues.streams import dead_letter

CHUNK = 500  # rows per round of marker lookups, publish and markers


@dataclass
class CsvReport:
    rows: int = 0
    published: int = 0
    already_published: int = 0
    dead_lettered: int = 0

    def to_json(self) -> dict[str, int]:
        return {"rows": self.rows, "published": self.published,
                "already_published": self.already_published,
                "dead_lettered": self.dead_lettered}  # fmt: skip


def read_rows(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for every data row; the header is line 1 (a row spanning several
    lines, in quotes, is numbered by its last)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        for row in reader:
            yield reader.line_num, {k: v for k, v in row.items() if isinstance(k, str)}


class CsvDrop:
    """Publishes one CSV file for one department under one mapping."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        dept: str,
        mapping: CsvMapping,
        catalog: EventCatalog,
        publish: Callable[[list[dict[str, Any]]], Any],
    ):
        self.redis, self.keys, self.dept, self.mapping = redis, keys, dept, mapping
        self.catalog, self.publish = catalog, publish
        self.scope = f"{dept}|{mapping.type}"

    def event(self, row: dict[str, str]) -> dict[str, Any]:
        def content_id() -> str:
            return derived_id("csv", self.scope, json.dumps(row, sort_keys=True))

        return map_record(
            self.mapping.columns, row_lookup(row), event_type=self.mapping.type,
            department=self.dept, fallback_id=content_id, id_kind="csv", id_scope=self.scope,
        )  # fmt: skip

    def run(
        self,
        path: Path,
        progress: Callable[[int], None] = lambda n: None,
        rows: Iterable[tuple[int, dict[str, str]]] | None = None,
    ) -> CsvReport:
        report = CsvReport()
        chunk: list[tuple[int, dict[str, str]]] = []
        for item in rows if rows is not None else read_rows(path, self.mapping.delimiter):
            chunk.append(item)
            if len(chunk) >= CHUNK:
                self._chunk(path.name, chunk, report)
                progress(len(chunk))
                chunk = []
        if chunk:
            self._chunk(path.name, chunk, report)
            progress(len(chunk))
        return report

    def _chunk(
        self, name: str, chunk: Sequence[tuple[int, dict[str, str]]], report: CsvReport
    ) -> None:
        good: dict[str, dict[str, Any]] = {}
        dead = 0
        pipe = self.redis.pipeline(transaction=False)
        for line, row in chunk:
            try:
                wire = self.catalog.accept(orjson.dumps(self.event(row)), self.dept)
            except (MappingError, InvalidEvent) as exc:
                dead_letter(pipe, self.keys, reason=exc.reason, message=f"{name}:{line}: {exc}",
                            stage="csv", dept=self.dept, body=json.dumps(row),
                            extra={"file": name, "line": str(line)})  # fmt: skip
                dead += 1
                continue
            good.setdefault(wire["id"], wire)  # a repeated row inside the file: one event
        pipe.execute()
        fresh: list[dict[str, Any]] = []
        if good:
            markers = [self.keys.csv_published(self.dept, event_id) for event_id in good]
            fresh = [w for w, seen in zip(good.values(), self.redis.mget(markers), strict=True)
                     if seen is None]  # fmt: skip
        if fresh:
            self.publish(fresh)
            ttl = self.mapping.remember_days * 86_400
            pipe = self.redis.pipeline(transaction=False)
            for wire in fresh:
                pipe.set(self.keys.csv_published(self.dept, wire["id"]), name, ex=ttl)
            pipe.execute()
        report.rows += len(chunk)
        report.dead_lettered += dead
        report.published += len(fresh)
        report.already_published += len(chunk) - dead - len(fresh)
