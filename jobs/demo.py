"""``make demo``: the main job end to end on the embedded defaults (local files, SQLite, local Ray).

Ingests the bundled ERA5 sample into ``output/analysis.zarr`` and prints what it wrote, scores
the shipped reference model on the held-out last week against persistence and climatology
(skill table in the database, report in ``output/reports/evaluate``), then runs a forecast with
it into ``output/forecast.zarr`` and the ``forecasts`` table.
"""

from __future__ import annotations

import sys

import xarray as xr

from jobs.common import console
from jobs.evaluate import EXIT_OK, evaluate
from jobs.forecast import predict
from jobs.ingest import EXIT_CLEAN, ingest

INGEST_CONFIG = "configs/ingest.yaml"
EVALUATE_CONFIG = "configs/evaluate.yaml"
FORECAST_CONFIG = "configs/forecast.yaml"


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
    console.print("\n[bold]evaluation[/bold] of the shipped model on the held-out week")
    status = evaluate(EVALUATE_CONFIG, [])
    if status != EXIT_OK:
        return status
    console.print("\n[bold]forecast[/bold] from the latest analysis times")
    return predict(FORECAST_CONFIG, [])


if __name__ == "__main__":
    sys.exit(main())
