"""Geospatial routing: jurisdiction layers, their H3 index, versions by effective time, and checks.

Layers are GeoJSON files read into zones (`layers`); an index answers which zones contain a
place, exactly, through an H3 cover of each zone (`cells`, `cover`, `index`). Redistricting
publishes versions of a layer from an effective time (`versions`); `Jurisdictions` routes each
point under the versions of its own time (`jurisdictions`), exclusive layers pick one owner on a
shared border (`tiebreak`), and departments follow from the zones (`departments`). A new version
is checked (`checks`) and compared with the old (`coverage`) before it is published. `config` is
the ``geo:`` section of the city YAML, `areas` departments' own subscription areas, `measure`
circles and areas in metres. Pure core: imports only the standard library, numpy, shapely, h3
(h3ronpy when installed), pydantic and `city.errors`; never `city.config`, which imports this
package for `GeoConfig` (what is read of a city config is typed by `citylike`). Modules inside
import their siblings directly, never through this file.
"""

from city.geo.areas import AreaIndex
from city.geo.cells import cells_for, cells_to_resolution, parse_cells
from city.geo.checks import validate_version
from city.geo.citylike import CityLike
from city.geo.config import AreaSubscription, GeoConfig, TieBreak, parse_geo
from city.geo.cover import MARGIN_DEG
from city.geo.coverage import CoverageChange, coverage_diff
from city.geo.departments import departments_for
from city.geo.index import JurisdictionIndex
from city.geo.jurisdictions import Jurisdictions, Located
from city.geo.layers import LayerError, Zone, load_layer, parse_layer
from city.geo.measure import area_m2, circle
from city.geo.report import location_report
from city.geo.tiebreak import break_tie
from city.geo.versions import BEGINNING, LayerVersion

__all__ = [
    "BEGINNING",
    "MARGIN_DEG",
    "AreaIndex",
    "AreaSubscription",
    "CityLike",
    "CoverageChange",
    "GeoConfig",
    "JurisdictionIndex",
    "Jurisdictions",
    "LayerError",
    "LayerVersion",
    "Located",
    "TieBreak",
    "Zone",
    "area_m2",
    "break_tie",
    "cells_for",
    "cells_to_resolution",
    "circle",
    "coverage_diff",
    "departments_for",
    "location_report",
    "load_layer",
    "parse_cells",
    "parse_geo",
    "parse_layer",
    "validate_version",
]
