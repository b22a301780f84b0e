"""`cityrelay geo locate`, `cityrelay jurisdictions ...` and `cityrelay locate`.

- ``geo locate --layer NAME=PATH ... --points FILE``: one output line per ``lat,lon`` input line,
  the sorted, comma-joined ``NAME#i`` of every feature containing or touching the point (a stable
  contract for automated checks; needs no Redis and no city config).
- ``jurisdictions publish|list|show|history|diff``: redistricting through Redis.
- ``locate --lat --lon [--at TIME]``: which zones and departments, under which versions, and why.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from redis.exceptions import ConnectionError as RedisConnectionError

from city.geo import (
    GeoConfig,
    JurisdictionIndex,
    Jurisdictions,
    LayerError,
    LayerVersion,
    coverage_diff,
    load_layer,
    location_report,
    validate_version,
)
from queues.jurisdictions import JurisdictionStore, JurisdictionWatcher, PublishError
from workers.runtime import Runtime


def register(subparsers: Any) -> None:
    geo = subparsers.add_parser("geo", help="geometry tools that need no Redis")
    geo_sub = geo.add_subparsers(dest="geo_command", metavar="ACTION", required=True)
    loc = geo_sub.add_parser("locate", help="which features of which layers contain each point")
    loc.add_argument("--layer", action="append", required=True, metavar="NAME=PATH")
    loc.add_argument("--points", required=True, help="file of 'lat,lon' lines ('-': stdin)")
    loc.add_argument("--resolution", type=int, default=10, help="H3 resolution (default 10)")
    loc.set_defaults(func=cmd_geo_locate)

    jur = subparsers.add_parser("jurisdictions", help="versioned jurisdiction layers")
    jur_sub = jur.add_subparsers(dest="jurisdictions_command", metavar="ACTION", required=True)
    pub = jur_sub.add_parser("publish", help="publish a new version of a layer")
    pub.add_argument("--layer", required=True)
    pub.add_argument("file", help="GeoJSON FeatureCollection")
    pub.add_argument("--effective-from", required=True, help="ISO 8601 time with zone, or 'now'")
    pub.add_argument("--name-property", help="feature property naming zones (default: config)")
    pub.add_argument("--note", default="", help="why (shown in history)")
    pub.add_argument("--dry-run", action="store_true", help="validate and report, do not store")
    pub.add_argument(
        "--allow-past", action="store_true", help="allow an effective time before now (backfill)"
    )
    pub.set_defaults(func=cmd_publish)
    lst = jur_sub.add_parser("list", help="layers and the version in force now")
    lst.set_defaults(func=cmd_list)
    show = jur_sub.add_parser("show", help="one version: metadata, zones, index size")
    show.add_argument("--layer", required=True)
    show.add_argument("--version", type=int, help="default: the one in force now")
    show.set_defaults(func=cmd_show)
    hist = jur_sub.add_parser("history", help="every version of a layer")
    hist.add_argument("--layer", required=True)
    hist.set_defaults(func=cmd_history)
    diff = jur_sub.add_parser("diff", help="area that changes hands between two versions")
    diff.add_argument("--layer", required=True)
    diff.add_argument("old", type=int)
    diff.add_argument("new", type=int)
    diff.set_defaults(func=cmd_diff)

    where = subparsers.add_parser("locate", help="which jurisdictions and departments, and why")
    where.add_argument("--lat", type=float, required=True)
    where.add_argument("--lon", type=float, required=True)
    where.add_argument("--at", help="ISO 8601 time (default now): boundaries in force then")
    where.set_defaults(func=cmd_locate)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _print(doc: Any) -> None:
    print(json.dumps(doc, indent=2, ensure_ascii=False, default=str))


def parse_time(text: str) -> datetime:
    """ISO 8601 with a zone (``Z`` accepted), or ``now``."""
    if text == "now":
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add Z or +hh:mm")
    return value.astimezone(UTC)


# --- geo locate (the contract) --------------------------------------------------------------


def read_points(lines: list[str], source: str) -> tuple[np.ndarray, np.ndarray]:
    """``lat,lon`` lines; blank lines and a ``lat,lon`` header are skipped, anything else fails."""
    lats: list[float] = []
    lons: list[float] = []
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text or (n == 1 and text.replace(" ", "").lower() == "lat,lon"):
            continue
        parts = text.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            lat, lon = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"{source}:{n}: expected 'lat,lon', got {text!r}") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError(f"{source}:{n}: ({lat}, {lon}) is not a lat/lon position")
        lats.append(lat)
        lons.append(lon)
    return np.array(lats, dtype=np.float64), np.array(lons, dtype=np.float64)


def cmd_geo_locate(args: argparse.Namespace, runtime: Runtime) -> int:
    zones = []
    for spec in args.layer:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            return _fail(f"--layer {spec!r}: expected NAME=PATH")
        try:
            zones.extend(load_layer(name, path))
        except LayerError as exc:
            return _fail(str(exc))
    try:
        if args.points == "-":
            lines = sys.stdin.read().splitlines()
        else:
            lines = Path(args.points).read_text(encoding="utf-8").splitlines()
        lats, lons = read_points(lines, args.points)
        index = JurisdictionIndex(zones, args.resolution)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    refs = [z.ref for z in zones]
    out = sys.stdout
    for hits in index.locate_many(lats, lons):
        out.write(",".join(sorted(refs[p] for p in hits)) + "\n")
    return 0


# --- jurisdictions --------------------------------------------------------------------------


def _world(runtime: Runtime) -> tuple[Jurisdictions, JurisdictionStore, Any]:
    """Config layers (version 0, when a config is given) plus every published version."""
    store = JurisdictionStore(runtime.redis(), runtime.keys)
    config = None
    base = Jurisdictions([])
    if runtime.config_path is not None:
        config, base_dir = runtime.city()
        base = Jurisdictions.from_city(config, base_dir, _geo_config(config))
    try:
        return JurisdictionWatcher(store, base).current(), store, config
    except RedisConnectionError as exc:
        raise SystemExit(f"error: cannot reach Redis at {runtime.redis_url}: {exc}") from None


def _geo_config(config: Any) -> GeoConfig:
    """The city's ``geo`` section once the lead hooks it into CityConfig; defaults until then."""
    geo = getattr(config, "geo", None)
    return geo if isinstance(geo, GeoConfig) else GeoConfig()


def cmd_publish(args: argparse.Namespace, runtime: Runtime) -> int:
    now = datetime.now(UTC)  # before parsing, so 'now' is not "in the past"
    try:
        effective = parse_time(args.effective_from)
    except ValueError as exc:
        return _fail(str(exc))
    if effective < now and not args.allow_past:
        return _fail(
            f"--effective-from {effective.isoformat()} is in the past: events already routed "
            "would disagree with it (use --allow-past for a deliberate backfill)"
        )
    world, store, config = _world(runtime)
    name_property = args.name_property
    if name_property is None and config is not None and args.layer in config.layers:
        name_property = config.layers[args.layer].name_property
    try:
        raw = Path(args.file).read_bytes()
        new = LayerVersion.from_geojson(
            args.layer, 0, effective, raw, name_property, note=args.note, published_at=now
        )
    except (OSError, LayerError) as exc:
        return _fail(str(exc))
    geo = _geo_config(config)
    errors, warnings = validate_version(new, config, exclusive=args.layer in geo.exclusive)
    report: dict[str, Any] = {"layer": args.layer, "effective_from": effective.isoformat()}
    report["features"] = len(new.zones)
    report["warnings"] = warnings
    previous = world.versions_at(effective).get(args.layer) if args.layer in world.layers else None
    if previous is not None:
        report["coverage_change"] = coverage_diff(previous, new).as_dict()
    if errors:
        report["errors"] = errors
        _print(report)
        return 1
    stats = JurisdictionIndex(new.zones, geo.resolution).stats()  # built aside: it works
    report["index"] = stats
    if args.dry_run:
        report["published"] = False
        _print(report)
        return 0
    try:
        report["version"] = store.publish(new, raw)
    except PublishError as exc:
        return _fail(str(exc))
    report["published"] = True
    _print(report)
    return 0


def cmd_list(args: argparse.Namespace, runtime: Runtime) -> int:
    world, _, _ = _world(runtime)
    now = datetime.now(UTC)
    in_force = world.versions_at(now)
    rows = []
    for layer in world.layers:
        history = world.history(layer)
        latest = history[-1]
        current = in_force.get(layer)
        rows.append(
            {
                "layer": layer,
                "in_force": current.version if current else None,
                "latest": latest.version,
                "latest_effective_from": latest.effective_from.isoformat(),
                "versions": len(history),
            }
        )
    _print(rows)
    return 0


def _version_doc(v: LayerVersion) -> dict[str, Any]:
    return {
        "layer": v.layer,
        "version": v.version,
        "effective_from": v.effective_from.isoformat(),
        "published_at": v.published_at.isoformat() if v.published_at else None,
        "name_property": v.name_property,
        "checksum": v.checksum,
        "note": v.note,
        "features": len(v.zones),
    }


def cmd_show(args: argparse.Namespace, runtime: Runtime) -> int:
    world, _, _ = _world(runtime)
    try:
        if args.version is None:
            world.history(args.layer)  # unknown layer: KeyError naming it
            v = world.versions_at(datetime.now(UTC)).get(args.layer)
            if v is None:
                return _fail(f"layer {args.layer!r} has no version in force now")
        else:
            v = world.version(args.layer, args.version)
    except KeyError as exc:
        return _fail(str(exc.args[0]))
    doc = _version_doc(v)
    doc["zones"] = [
        {"index": z.index, "name": z.name, "bounds": [round(b, 6) for b in z.geometry.bounds]}
        for z in v.zones
    ]
    doc["index"] = world.index(v).stats()
    _print(doc)
    return 0


def cmd_history(args: argparse.Namespace, runtime: Runtime) -> int:
    world, _, _ = _world(runtime)
    try:
        _print([_version_doc(v) for v in world.history(args.layer)])
    except KeyError as exc:
        return _fail(str(exc.args[0]))
    return 0


def cmd_diff(args: argparse.Namespace, runtime: Runtime) -> int:
    world, _, _ = _world(runtime)
    try:
        old = world.version(args.layer, args.old)
        new = world.version(args.layer, args.new)
    except KeyError as exc:
        return _fail(str(exc.args[0]))
    _print(coverage_diff(old, new).as_dict())
    return 0


def cmd_locate(args: argparse.Namespace, runtime: Runtime) -> int:
    try:
        at = parse_time(args.at) if args.at else datetime.now(UTC)
    except ValueError as exc:
        return _fail(str(exc))
    if not (-90 <= args.lat <= 90 and -180 <= args.lon <= 180):
        return _fail(f"({args.lat}, {args.lon}) is not a lat/lon position")
    config, _ = runtime.city()
    world, _, _ = _world(runtime)
    _print(location_report(world, config, args.lat, args.lon, at))
    return 0
