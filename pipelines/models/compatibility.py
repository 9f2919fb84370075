"""Does an analysis store hold what a model reads? The card checked against the store's layout."""

from __future__ import annotations

import numpy as np
import xarray as xr

from pipelines.errors import SchemaError
from pipelines.store_layout import StoreLayout, layout_of
from schemas.model_card import ModelCard

_GRID_TOLERANCE = 1e-6


def _store_layout(dataset: StoreLayout | xr.Dataset) -> StoreLayout:
    return dataset if isinstance(dataset, StoreLayout) else layout_of(dataset)


def check_dataset(card: ModelCard, dataset: StoreLayout | xr.Dataset, where: str = "store") -> None:
    """Check that the store (its layout, or the dataset) holds what the model reads.

    Raises
    ------
    SchemaError
        A variable or level is missing, a variable's dimensions do not fit, or the grid
        differs; the message names what was found, what the card expects and the fix.
    """
    layout = _store_layout(dataset)
    grid = layout.grid
    problems = []
    missing = [name for name in card.inputs.variables if name not in layout.names]
    if missing:
        problems.append(
            f"variable(s) {missing} missing (the store has {list(layout.names)}): "
            "ingest them into the store"
        )
    levels = card.inputs.levels
    absent = [level for level in levels if level not in grid.level]
    if absent:
        problems.append(
            f"level(s) {absent} missing (the store has {list(grid.level)}): ingest those levels"
        )
    wanted_dims = ("time", "level", "lat", "lon") if levels else ("time", "lat", "lon")
    for var in layout.variables:
        if var.name in card.inputs.variables and var.dims != wanted_dims:
            problems.append(
                f"{var.name} has dims {var.dims}, the model reads {wanted_dims}"
                + (" (ensemble stores are not supported)" if "member" in var.dims else "")
            )
    n_lat, n_lon = card.inputs.grid.shape
    same_grid = (
        len(grid.lat) == n_lat
        and len(grid.lon) == n_lon
        and np.allclose(grid.lat, card.inputs.grid.lat, atol=_GRID_TOLERANCE, rtol=0)
        and np.allclose(grid.lon, card.inputs.grid.lon, atol=_GRID_TOLERANCE, rtol=0)
    )
    if not same_grid:
        found = f"{len(grid.lat)}x{len(grid.lon)}"
        if grid.lat and grid.lon:
            found += f" lat {grid.lat[0]:g}..{grid.lat[-1]:g} lon {grid.lon[0]:g}..{grid.lon[-1]:g}"
        lat, lon = card.inputs.grid.lat, card.inputs.grid.lon
        problems.append(
            f"grid {found} differs from the model's {n_lat}x{n_lon} lat {lat[0]:g}..{lat[-1]:g} "
            f"lon {lon[0]:g}..{lon[-1]:g}: regrid the analysis or use a model for this grid"
        )
    if problems:
        raise SchemaError(
            f"{where}: does not fit model {card.name} {card.version}: " + "; ".join(problems)
        )
