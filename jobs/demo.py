"""``make demo``: the main job end to end on the embedded defaults (local files, SQLite, local Ray).

Uses the model registry the way production does: ingests the bundled ERA5 sample into
``output/analysis.zarr``, registers the shipped reference model, evaluates that registered
version on the held-out last week (skill table in the database, report in
``output/reports/evaluate``), promotes it through the registry's skill gate, then forecasts
with ``{name, version: promoted}`` into ``output/forecast.zarr`` and the ``forecasts`` table.
"""

from __future__ import annotations

import sys

import xarray as xr
from rich.markup import escape

from jobs.common import EXIT_ERROR, EXIT_OK, EXIT_REFUSED, console, setup_logging
from jobs.evaluate import evaluate
from jobs.forecast import predict
from jobs.ingest import EXIT_CLEAN, ingest
from jobs.models import open_context
from pipelines.errors import ClimateError, ModelError

INGEST_CONFIG = "configs/ingest.yaml"
EVALUATE_CONFIG = "configs/evaluate.yaml"
FORECAST_CONFIG = "configs/forecast.yaml"  # model: {name: t2m-resconv, version: promoted}
SHIPPED_MODEL = "models/t2m-resconv/model.onnx"


def _show_analysis(url: str) -> None:
    store = xr.open_zarr(url)
    console.print(f"\n[bold]analysis store[/bold] {url}")
    console.print(store)
    t2m = store.t2m
    console.print(
        f"t2m: {t2m.sizes['time']} hourly fields "
        f"{str(store.time.values[0])[:16]} .. {str(store.time.values[-1])[:16]}, "
        f"mean {float(t2m.mean()):.2f} K, "
        f"min {float(t2m.min()):.2f} K, max {float(t2m.max()):.2f} K"
    )


def _registry_step(step: str, name: str, version: str | None = None) -> tuple[str, str] | int:
    """Register the shipped model, or promote ``name`` ``version``; an exit status on failure."""
    try:
        registry = open_context().registry
        if step == "register":
            record = registry.register(SHIPPED_MODEL)
        else:
            record = registry.promote(name, version or "")
    except ModelError as exc:
        console.print(f"[red]refused:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_REFUSED
    except ClimateError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_ERROR
    console.print(f"{record.name} {record.version}: {record.status}", highlight=False)
    return record.name, record.version


def main() -> int:
    status = ingest(INGEST_CONFIG, [])
    if status != EXIT_CLEAN:
        return status
    _show_analysis("output/analysis.zarr")
    setup_logging()
    console.print("\n[bold]registry[/bold]: register the shipped model")
    registered = _registry_step("register", "")
    if isinstance(registered, int):
        return registered
    name, version = registered
    console.print(f"\n[bold]evaluation[/bold] of {name} {version} on the held-out week")
    source = f"model={{kind: registry, name: {name}, version: {version}}}"
    status = evaluate(EVALUATE_CONFIG, [source])
    if status != EXIT_OK:
        return status
    console.print("\n[bold]registry[/bold]: promote through the skill gate")
    promoted = _registry_step("promote", name, version)
    if isinstance(promoted, int):
        return promoted
    console.print("\n[bold]forecast[/bold] with the promoted model from the latest analysis times")
    return predict(FORECAST_CONFIG, [])


if __name__ == "__main__":
    sys.exit(main())
