"""Metres on lon/lat geometry: a circle of a radius around a point, and an area in m².

City-scale approximations in a local frame (see each function), used for area subscriptions
(circles around points) and for redistricting reports (areas that change hands).
"""

from __future__ import annotations

import math

import shapely
from shapely import affinity
from shapely.geometry.base import BaseGeometry

_EARTH_RADIUS_M = 6_371_008.8


def circle(lat: float, lon: float, radius_m: float, quad_segs: int = 32) -> BaseGeometry:
    """A circle of `radius_m` metres around a point, as a lon/lat polygon.

    Built in a local equirectangular frame (exact enough for city-scale radii: the polygon is
    inscribed with 4*quad_segs sides, radial error < 0.03 % of the radius at the default).
    """
    if radius_m <= 0:
        raise ValueError(f"radius must be positive metres, got {radius_m}")
    dlat = math.degrees(radius_m / _EARTH_RADIUS_M)
    scale = math.cos(math.radians(lat))
    unit = shapely.Point(0.0, 0.0).buffer(1.0, quad_segs=quad_segs)
    return affinity.affine_transform(unit, [dlat / scale, 0, 0, dlat, lon, lat])


def area_m2(geometry: BaseGeometry) -> float:
    """Approximate area in square metres (local equal-area scaling at the centroid's latitude)."""
    if geometry.is_empty:
        return 0.0
    lat = geometry.centroid.y
    k = math.radians(1.0) * _EARTH_RADIUS_M
    return float(geometry.area * k * k * math.cos(math.radians(lat)))
