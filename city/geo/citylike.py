"""The parts of a city config that the geo package reads, as structural types.

`city.config.CityConfig` holds the ``geo:`` section (`GeoConfig`), so the city config imports
this package; this package must not import it back. The functions that look at the rest of the
config (`parse_geo`'s cross-check, `Jurisdictions.from_city`, `departments_for`,
`validate_version`) name only what they read; `CityConfig` and its members provide it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol


class LayerConfigLike(Protocol):
    """A configured layer file (`city.config.LayerConfig`)."""

    @property
    def path(self) -> str: ...

    @property
    def name_property(self) -> str | None: ...


class JurisdictionRefLike(Protocol):
    """Zones of one layer a department answers for (`city.config.JurisdictionRef`)."""

    @property
    def layer(self) -> str: ...

    @property
    def zones(self) -> list[str] | Literal["all"]: ...


class DepartmentLike(Protocol):
    """A department and its jurisdiction (`city.config.DepartmentConfig`)."""

    @property
    def id(self) -> str: ...

    @property
    def jurisdiction(self) -> Sequence[JurisdictionRefLike]: ...


class CityLike(Protocol):
    """A city's layers and departments (`city.config.CityConfig`)."""

    @property
    def layers(self) -> Mapping[str, LayerConfigLike]: ...

    @property
    def departments(self) -> Sequence[DepartmentLike]: ...

    @property
    def department_ids(self) -> list[str]: ...
