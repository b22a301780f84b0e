"""CAP area shapes and GeoJSON, both ways: CAP polygons ("lat,lon" pairs) and circles
("lat,lon radius_km") checked and turned into lon/lat rings (circles as 64-gon approximations in
metres on the sphere), merged into one routing geometry; and a location rendered back as CAP
polygons and circles."""

from __future__ import annotations

import math
from typing import Any

from city.cap.model import CapError

EARTH_RADIUS_M = 6_371_008.8
CIRCLE_SEGMENTS = 64


def _parse_point(pair: str, where: str) -> tuple[float, float]:
    """A CAP "lat,lon" pair as (lon, lat), range-checked."""
    try:
        lat_s, lon_s = pair.split(",")
        lat, lon = float(lat_s), float(lon_s)
    except ValueError:
        raise CapError(f"{where}: {pair!r} is not a 'latitude,longitude' pair") from None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise CapError(f"{where}: {pair!r} is outside latitude/longitude range")
    return lon, lat


def parse_polygon(text: str, where: str = "polygon") -> list[list[float]]:
    """A CAP polygon (space-separated "lat,lon" pairs, closed, >= 4 pairs) as a GeoJSON ring."""
    ring = [list(_parse_point(pair, where)) for pair in text.split()]
    if len(ring) < 4:
        raise CapError(f"{where}: a polygon needs at least 4 coordinate pairs, got {len(ring)}")
    if ring[0] != ring[-1]:
        raise CapError(f"{where}: the first and last coordinate pairs must be the same")
    if _signed_area(ring) < 0:
        ring.reverse()  # RFC 7946: exterior rings counter-clockwise
    return ring


def _signed_area(ring: list[list[float]]) -> float:
    return sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(ring, ring[1:], strict=False)) / 2


def parse_circle(text: str, where: str = "circle") -> tuple[float, float, float]:
    """A CAP circle "lat,lon radius_km" as (lon, lat, radius in metres)."""
    parts = text.split()
    if len(parts) != 2:
        raise CapError(f"{where}: {text!r} is not 'latitude,longitude radius_km'")
    lon, lat = _parse_point(parts[0], where)
    try:
        radius_km = float(parts[1])
    except ValueError:
        raise CapError(f"{where}: radius {parts[1]!r} is not a number") from None
    if not (math.isfinite(radius_km) and radius_km >= 0):
        raise CapError(f"{where}: radius must be a finite number of kilometres >= 0")
    return lon, lat, radius_km * 1000.0


def circle_polygon(
    lon: float, lat: float, radius_m: float, segments: int = CIRCLE_SEGMENTS
) -> list[list[float]]:
    """A closed counter-clockwise ring approximating a circle on the sphere (great-circle)."""
    phi1, lam1 = math.radians(lat), math.radians(lon)
    delta = radius_m / EARTH_RADIUS_M
    if delta >= math.pi / 2 - abs(phi1):
        # The circle contains a pole: its vertices never reach latitude 90, but the lon/lat ring
        # through them would describe a band around the pole, not the cap containing it.
        raise CapError(
            f"circle at {lat},{lon} with radius {radius_m / 1000:g} km contains a pole;"
            " describe the area with polygons instead"
        )
    ring: list[list[float]] = []
    for i in range(segments):
        theta = -2 * math.pi * i / segments  # clockwise bearings -> counter-clockwise ring
        phi2 = math.asin(
            math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
        )
        lam2 = lam1 + math.atan2(
            math.sin(theta) * math.sin(delta) * math.cos(phi1),
            math.cos(delta) - math.sin(phi1) * math.sin(phi2),
        )
        lon2 = math.degrees(lam2)
        if not -180 <= lon2 <= 180 or abs(math.degrees(phi2)) >= 90:
            raise CapError(
                f"circle at {lat},{lon} with radius {radius_m / 1000:g} km crosses the antimeridian"
                " or a pole; describe the area with polygons instead"
            )
        ring.append([round(lon2, 7), round(math.degrees(phi2), 7)])
    ring.append(ring[0])
    return ring


def routing_geometry(
    polygons: list[list[list[list[float]]]], points: list[list[float]]
) -> dict[str, Any] | None:
    """One GeoJSON geometry for routing: Polygon / MultiPolygon, or Point / MultiPoint.

    Points next to polygons (radius-0 circles in an alert that also has shapes) become
    1-metre circles so the result stays one MultiPolygon.
    """
    if not polygons:
        if not points:
            return None
        if len(points) == 1:
            return {"type": "Point", "coordinates": points[0]}
        return {"type": "MultiPoint", "coordinates": points}
    polygons = polygons + [[circle_polygon(lon, lat, 1.0)] for lon, lat in points]
    if len(polygons) == 1:
        return {"type": "Polygon", "coordinates": polygons[0]}
    return {"type": "MultiPolygon", "coordinates": polygons}


def geometry_to_cap(location: dict[str, Any]) -> dict[str, list[str]]:
    """CAP polygons/circles for a location: points -> radius-0 circles, polygons -> their
    exterior rings, lines -> their bounding box (CAP has no lines; holes are not expressible)."""

    def pair(pos: list[float]) -> str:
        return f"{pos[1]:.7g},{pos[0]:.7g}"

    def ring_text(ring: list[list[float]]) -> str:
        return " ".join(pair(p) for p in ring)

    if "lat" in location:
        return {"polygons": [], "circles": [f"{location['lat']:.7g},{location['lon']:.7g} 0"]}
    kind, coords = location["type"], location["coordinates"]
    if kind == "Point":
        return {"polygons": [], "circles": [pair(coords) + " 0"]}
    if kind == "MultiPoint":
        return {"polygons": [], "circles": [pair(p) + " 0" for p in coords]}
    if kind == "Polygon":
        return {"polygons": [ring_text(coords[0])], "circles": []}
    if kind == "MultiPolygon":
        return {"polygons": [ring_text(poly[0]) for poly in coords], "circles": []}
    positions = coords if kind == "LineString" else [p for line in coords for p in line]
    lons, lats = [p[0] for p in positions], [p[1] for p in positions]
    w, e, s, n = min(lons), max(lons), min(lats), max(lats)
    box = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    return {"polygons": [ring_text(box)], "circles": []}
