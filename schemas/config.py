"""Pipeline configuration: pydantic models loaded from YAML, unknown keys rejected."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.variables import VARIABLES

ModelT = TypeVar("ModelT", bound=BaseModel)
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class StrictModel(BaseModel):
    """A config section: unknown keys are an error, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageOptions(StrictModel):
    """How to reach object storage. Credentials come from the environment, never from here."""

    endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint; overrides S3_ENDPOINT_URL"
    )
    region: str | None = Field(default=None, description="overrides AWS_REGION")
    anon: bool = Field(default=False, description="unsigned requests to public buckets")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=10)


def _known_variables(names: list[str]) -> list[str]:
    unknown = [name for name in names if name not in VARIABLES]
    if unknown:
        raise ValueError(
            f"unknown variable(s) {unknown}; use the lexicon's short names: {sorted(VARIABLES)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"variables listed twice: {names}")
    return names


class SourceBase(StrictModel):
    """What every source kind shares: where the files are and what to take from them."""

    urls: list[str] = Field(min_length=1, description="paths, globs, directories or s3:// prefixes")
    variables: list[str] = Field(min_length=1, description="canonical short names to ingest")
    rename: dict[str, str] = Field(
        default_factory=dict, description="source variable or dimension name -> canonical name"
    )
    units: dict[str, str] = Field(
        default_factory=dict, description="declared units for variables whose files lack them"
    )
    select: dict[str, int | float | str] = Field(
        default_factory=dict, description="pick one label along extra dimensions, e.g. month: 1"
    )
    fixed_time: datetime | None = Field(
        default=None, description="time (UTC) to assign to inputs that have no time axis"
    )

    _check_variables = field_validator("variables")(_known_variables)


class GribSource(SourceBase):
    """GRIB 1/2 files read through cfgrib and ecCodes."""

    kind: Literal["grib"]
    filter_by_keys: dict[str, str | int] = Field(
        default_factory=dict, description="cfgrib filter, e.g. typeOfLevel: isobaricInhPa"
    )


class NetcdfSource(SourceBase):
    """NetCDF 3/4 files."""

    kind: Literal["netcdf"]
    engine: Literal["netcdf4", "h5netcdf", "scipy"] = "netcdf4"


class ZarrSource(SourceBase):
    """Existing Zarr stores (v2 or v3); each URL is one store."""

    kind: Literal["zarr"]
    group: str | None = None


SourceConfig = Annotated[GribSource | NetcdfSource | ZarrSource, Field(discriminator="kind")]


class ChunkSpec(StrictModel):
    """Chunk lengths of the analysis store; long in time for time-series reads."""

    time: int = Field(default=48, ge=1)
    level: int = Field(default=1, ge=1)
    member: int = Field(default=1, ge=1)
    lat: int = Field(default=256, ge=1)
    lon: int = Field(default=256, ge=1)


class Compression(StrictModel):
    """Blosc compression of every data variable."""

    codec: Literal["zstd", "lz4", "blosclz", "zlib"] = "zstd"
    level: int = Field(default=3, ge=0, le=9)
    shuffle: bool = True


class StoreConfig(StrictModel):
    """The canonical analysis Zarr store."""

    url: str
    chunks: ChunkSpec = ChunkSpec()
    compression: Compression = Compression()


class RayConfig(StrictModel):
    """Where and how wide to run. ``address`` overrides RAY_ADDRESS; local Ray if neither."""

    address: str | None = None
    num_cpus: int | None = Field(default=None, ge=1, description="for a local Ray only")
    concurrency: int | None = Field(default=None, ge=1, description="parallel tasks; all CPUs")
    cpus_per_task: float = Field(default=1.0, gt=0)


class IngestConfig(StrictModel):
    """``climate ingest``: files in, one canonical Zarr store out."""

    source: SourceConfig
    store: StoreConfig
    storage: StorageOptions = StorageOptions()
    ray: RayConfig = RayConfig()
    run_id: str | None = Field(default=None, description="a re-run of the same id replaces it")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted ``key.sub=value`` overrides; values are parsed as YAML scalars."""
    for override in overrides:
        key, sep, raw_value = override.partition("=")
        if not sep or not key:
            raise ValueError(f"override {override!r} is not of the form key.sub=value")
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {override!r}: {part!r} is not a section")
            node = child
        node[leaf] = yaml.safe_load(raw_value)
    return data


def format_validation_error(origin: str, exc: ValidationError) -> str:
    """One line per problem: the dotted key, the value found and what was expected."""
    lines = [f"{origin}: invalid configuration"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        found = error.get("input")
        lines.append(f"  {key} = {found!r}: {error['msg']}")
    return "\n".join(lines)


def parse_config(model: type[ModelT], data: Any, origin: str) -> ModelT:
    """Validate already-loaded data against ``model``; raises ValueError with every problem."""
    if not isinstance(data, dict):
        raise ValueError(
            f"{origin}: expected a mapping at the top level, found {type(data).__name__}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(format_validation_error(origin, exc)) from exc


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content; ValueError naming the file when it cannot be read or parsed."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the configuration file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc


def load_config(
    model: type[ModelT], path: str | Path, overrides: list[str] | None = None
) -> ModelT:
    """Read a YAML file, apply dotted overrides and validate it against ``model``."""
    path = Path(path)
    data = read_yaml(path)
    if isinstance(data, dict):
        data = apply_overrides(data, overrides or [])
    return parse_config(model, data, str(path))
