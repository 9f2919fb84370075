"""``make demo``: the main job end to end on the embedded defaults (local files, SQLite, local Ray).

Ingests the bundled ERA5 sample into ``output/analysis.zarr`` and prints what it wrote.
"""

from __future__ import annotations

import sys

import xarray as xr

from jobs.common import console
from jobs.ingest import EXIT_CLEAN, ingest

INGEST_CONFIG = "configs/ingest.yaml"


def main() -> int:
    status = ingest(INGEST_CONFIG, [])
    if status != EXIT_CLEAN:
        return status
    store = xr.open_zarr("output/analysis.zarr")
    console.print("\n[bold]analysis store[/bold] output/analysis.zarr")
    console.print(store)
    t2m = store.t2m
    console.print(
        f"t2m: {t2m.sizes['time']} hourly fields "
        f"{str(store.time.values[0])[:16]} .. {str(store.time.values[-1])[:16]}, "
        f"mean {float(t2m.mean()):.2f} K, "
        f"min {float(t2m.min()):.2f} K, max {float(t2m.max()):.2f} K"
    )
    return EXIT_CLEAN


if __name__ == "__main__":
    sys.exit(main())
