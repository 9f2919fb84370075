"""``climate watch``: which prefix to follow, how its files name their initial times, when an
initial time's files are complete, and which ingest and forecast configs each cycle runs."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, field_validator

from schemas.config import StorageOptions, StrictModel
from schemas.variables import VARIABLES


class WatchSource(StrictModel):
    """The prefix to follow and how a file's name gives its initial time."""

    url: str = Field(description="a local directory or an s3://bucket/prefix/")
    pattern: str = Field(
        description=r"regex matched against whole file names, with a named group `time`, "
        r"e.g. era5-(?P<time>\d{10})\.grib"
    )
    time_format: str = Field(
        default="%Y%m%d%H", description="strftime format of the `time` group (UTC)"
    )
    kind: Literal["grib", "netcdf"]
    variables: list[str] = Field(min_length=1, description="canonical short names to ingest")

    @field_validator("pattern")
    @classmethod
    def _has_time_group(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc}); fix the pattern") from exc
        if "time" not in compiled.groupindex:
            raise ValueError(
                "has no named group `time`; mark the part of the name that holds the initial "
                r"time, e.g. era5-(?P<time>\d{10})\.grib"
            )
        return value

    @field_validator("variables")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [name for name in names if name not in VARIABLES]
        if unknown:
            raise ValueError(
                f"unknown variable(s) {unknown}; use the lexicon's short names: {sorted(VARIABLES)}"
            )
        return names

    def initial_time(self, text: str) -> datetime:
        """The initial time (UTC) written as ``text`` in a file name; ValueError if malformed."""
        return datetime.strptime(text, self.time_format).replace(tzinfo=UTC)


class WatchConfig(StrictModel):
    """``climate watch``: follow a prefix; ingest and forecast each new initial time once."""

    source: WatchSource
    settle_seconds: float = Field(
        default=60.0,
        ge=0,
        description="an initial time's files are complete when none changed for this long",
    )
    expected_files: int | None = Field(
        default=None, ge=1, description="complete at once when an initial time has this many"
    )
    marker: str | None = Field(
        default=None,
        description="file name declaring an initial time complete at once; {time} stands for "
        "the text of the pattern's time group, e.g. era5-{time}.done",
    )
    poll_seconds: float = Field(default=5.0, gt=0, description="how often the prefix is listed")
    ingest: str = Field(description="ingest YAML (store, chunks, ray); its source is replaced")
    forecast: str = Field(description="forecast YAML (model, lead times, output)")
    storage: StorageOptions = Field(
        default_factory=StorageOptions,
        description="reaching an s3:// prefix; the keys set here also apply to the ingest",
    )

    @field_validator("marker")
    @classmethod
    def _marker_names_time(cls, value: str | None) -> str | None:
        if value is not None and "{time}" not in value:
            raise ValueError(
                "does not contain {time}; write where the initial time goes in the marker's "
                "name, e.g. era5-{time}.done"
            )
        return value
