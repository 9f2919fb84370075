"""What a canonical dataset holds, apart from its time axis: grid, variables, attributes.

The contract between the analysis store (which writes it), ingest (which compares files with it)
and the model room (which checks a model's card against it); no storage here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import xarray as xr

from pipelines.canonical import GridSignature, grid_signature


@dataclass(frozen=True)
class VariableLayout:
    """A data variable's dimensions and attributes, enough to create it."""

    name: str
    dims: tuple[str, ...]
    attrs: dict[str, Any]


@dataclass(frozen=True)
class StoreLayout:
    """Everything but the time axis: grid, variables, dataset attributes."""

    grid: GridSignature
    variables: tuple[VariableLayout, ...]
    attrs: dict[str, Any]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(var.name for var in self.variables)


def layout_of(dataset: xr.Dataset) -> StoreLayout:
    """The layout of a canonical dataset."""
    variables = tuple(
        VariableLayout(str(name), tuple(str(d) for d in var.dims), dict(var.attrs))
        for name, var in sorted(dataset.data_vars.items())
    )
    return StoreLayout(grid_signature(dataset), variables, dict(dataset.attrs))
