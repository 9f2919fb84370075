"""The variable lexicon and the canonical grid conventions, shared by every source and sink."""

from __future__ import annotations

from dataclasses import dataclass, field

# Canonical conventions, chosen once for the whole project.
DIMENSION_ORDER: tuple[str, ...] = ("time", "level", "member", "lat", "lon")
LATITUDE_ORDER = "descending"  # north to south, as ERA5 and GRIB deliver it
LONGITUDE_RANGE = (-180.0, 180.0)  # [-180, 180)
COORDINATE_ATTRS: dict[str, dict[str, str]] = {
    "lat": {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude"},
    "lon": {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"},
    "level": {"units": "hPa", "long_name": "pressure level"},
    "member": {"long_name": "ensemble member"},
}


@dataclass(frozen=True)
class UnitConversion:
    """``canonical = value * scale + offset``."""

    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class VariableSpec:
    """One canonical variable: its short name, units and the names sources use for it."""

    name: str
    units: str
    long_name: str
    standard_name: str
    aliases: tuple[str, ...] = ()
    unit_aliases: tuple[str, ...] = ()
    conversions: dict[str, UnitConversion] = field(default_factory=dict)


_KELVIN_ALIASES = ("K", "kelvin", "Kelvin", "degK", "deg_K")
_CELSIUS = {
    unit: UnitConversion(offset=273.15) for unit in ("degC", "C", "celsius", "degree_Celsius")
}
_WIND_ALIASES = ("m s**-1", "m/s", "m s-1", "m.s-1", "meter second-1", "m s^-1")
_GEOPOTENTIAL_ALIASES = ("m**2 s**-2", "m2 s-2", "m^2/s^2", "m2/s2", "m^2 s^-2", "m**2/s**2")
_PASCAL_ALIASES = ("Pa", "pascal", "Pascal")
_HECTOPASCAL = {unit: UnitConversion(scale=100.0) for unit in ("hPa", "mbar", "millibar")}

VARIABLES: dict[str, VariableSpec] = {
    spec.name: spec
    for spec in (
        VariableSpec(
            "t2m",
            "K",
            "2 metre temperature",
            "air_temperature",
            aliases=("2t", "t2", "tas", "2m_temperature", "air_temperature_2m"),
            unit_aliases=_KELVIN_ALIASES,
            conversions=_CELSIUS,
        ),
        VariableSpec(
            "t",
            "K",
            "Temperature",
            "air_temperature",
            aliases=("temperature", "ta", "air_temperature"),
            unit_aliases=_KELVIN_ALIASES,
            conversions=_CELSIUS,
        ),
        VariableSpec(
            "z",
            "m**2 s**-2",
            "Geopotential",
            "geopotential",
            aliases=("geopotential", "zg_geopotential"),
            unit_aliases=_GEOPOTENTIAL_ALIASES,
        ),
        VariableSpec(
            "u",
            "m s**-1",
            "U component of wind",
            "eastward_wind",
            aliases=("u_component_of_wind", "ua", "uwnd"),
            unit_aliases=_WIND_ALIASES,
        ),
        VariableSpec(
            "v",
            "m s**-1",
            "V component of wind",
            "northward_wind",
            aliases=("v_component_of_wind", "va", "vwnd"),
            unit_aliases=_WIND_ALIASES,
        ),
        VariableSpec(
            "u10",
            "m s**-1",
            "10 metre U wind component",
            "eastward_wind",
            aliases=("10u", "10m_u_component_of_wind", "uas"),
            unit_aliases=_WIND_ALIASES,
        ),
        VariableSpec(
            "v10",
            "m s**-1",
            "10 metre V wind component",
            "northward_wind",
            aliases=("10v", "10m_v_component_of_wind", "vas"),
            unit_aliases=_WIND_ALIASES,
        ),
        VariableSpec(
            "msl",
            "Pa",
            "Mean sea level pressure",
            "air_pressure_at_mean_sea_level",
            aliases=("mslp", "prmsl", "mean_sea_level_pressure", "psl"),
            unit_aliases=_PASCAL_ALIASES,
            conversions=_HECTOPASCAL,
        ),
        VariableSpec(
            "sp",
            "Pa",
            "Surface pressure",
            "surface_air_pressure",
            aliases=("surface_pressure", "ps"),
            unit_aliases=_PASCAL_ALIASES,
            conversions=_HECTOPASCAL,
        ),
        VariableSpec(
            "q",
            "kg kg**-1",
            "Specific humidity",
            "specific_humidity",
            aliases=("specific_humidity", "hus"),
            unit_aliases=("kg kg**-1", "kg/kg", "kg kg-1", "1"),
        ),
    )
}

_ALIAS_TO_NAME: dict[str, str] = {
    alias.lower(): spec.name for spec in VARIABLES.values() for alias in (spec.name, *spec.aliases)
}


def canonical_name(source_name: str) -> str | None:
    """The lexicon's short name for a source variable name, or None if it is unknown."""
    return _ALIAS_TO_NAME.get(source_name.lower())


def unit_conversion(name: str, units: str | None) -> UnitConversion | None:
    """How to bring ``units`` to the canonical units of ``name``; None if they cannot be."""
    spec = VARIABLES[name]
    if units is None:
        return None
    cleaned = units.strip()
    if cleaned == spec.units or cleaned in spec.unit_aliases:
        return UnitConversion()
    return spec.conversions.get(cleaned)
