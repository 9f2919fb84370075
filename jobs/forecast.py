"""``python -m jobs.forecast --config configs/forecast.yaml``: the forecast Ray Job entrypoint."""

from __future__ import annotations

import sys
from typing import Any

from rich.markup import escape
from rich.table import Table

from jobs.common import BarProgress, console, job_parser, read_config, setup_logging
from pipelines.db import make_engine, migrate
from pipelines.errors import ClimateError
from pipelines.forecast.runner import ForecastSummary, execute_forecast, prepare_forecast
from pipelines.forecast.store import open_forecast_store
from pipelines.ray_data import ensure_ray
from schemas.forecast_config import ForecastConfig
from schemas.settings import load_settings

EXIT_CLEAN, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
_SAMPLE_ROWS = 5


def print_summary(summary: ForecastSummary) -> None:
    """The end-of-run report: model, device, counts, timings."""
    table = Table(title=f"forecast run {summary.run_id}: {summary.status}", show_header=False)
    seconds = summary.seconds
    rows = [
        ("model", f"{summary.model['name']} {summary.model['version']}"),
        ("model sha256", summary.model["sha256"]),
        ("analysis", summary.analysis_url),
        ("forecast store", summary.zarr_url),
        ("device", summary.device),
        ("actors / nodes", f"{summary.actors} / {len(summary.nodes)}"),
        ("initial times", summary.init_times),
        ("lead times (h)", _leads(summary.lead_hours)),
        ("fields", summary.fields),
        ("rows in forecasts table", summary.rows),
        ("fields/s (compute)", f"{summary.fields_per_second:.1f}"),
        (
            "seconds plan/compute/commit",
            " / ".join(f"{seconds.get(k, 0.0):.1f}" for k in ("plan", "compute", "commit")),
        ),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)


def _leads(hours: list[int]) -> str:
    return (
        ", ".join(map(str, hours)) if len(hours) <= 8 else f"{hours[0]}..{hours[-1]} ({len(hours)})"
    )


def print_sample(summary: ForecastSummary, storage_options: dict[str, Any]) -> None:
    """A few forecast values of the run the store now serves."""
    store = open_forecast_store(summary.zarr_url, storage_options=storage_options)
    name = next(iter(store.data_vars))
    field = store[name].isel(init_time=-1)
    lat, lon = store.sizes["lat"] // 2, store.sizes["lon"] // 2
    table = Table(title=f"{name} at lat {float(store.lat[lat]):g}, lon {float(store.lon[lon]):g}")
    for column in ("init time", "lead (h)", "valid time", f"{name} [{field.attrs.get('units')}]"):
        table.add_column(column)
    for k in range(min(_SAMPLE_ROWS, store.sizes["lead_time"])):
        value = float(field.isel(lead_time=k, lat=lat, lon=lon))
        table.add_row(
            str(store.init_time.values[-1])[:16],
            str(int(store.lead_time.values[k] / 3.6e12)),
            str(store.valid_time.values[-1, k])[:16],
            f"{value:.2f}",
        )
    console.print(table)


def predict(config_path: str, overrides: list[str], verbose: bool = False) -> int:
    """Run one forecast; returns the exit status (0 succeeded, 1 run failed, 2 bad input)."""
    setup_logging(verbose)
    try:
        config = read_config(ForecastConfig, config_path, overrides)
        settings = load_settings()
        engine = make_engine(settings.database_url)
        migrate(engine)
        ensure_ray(config.ray, settings)
        prepared = prepare_forecast(config, settings)
    except ClimateError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return EXIT_ERROR
    try:
        with BarProgress() as progress:
            summary = execute_forecast(prepared, engine, progress)
    except ClimateError as exc:
        console.print(
            f"[red]run {prepared.run_id} failed:[/red] {escape(str(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        return EXIT_FAILED
    print_summary(summary)
    print_sample(summary, prepared.zarr_options)
    return EXIT_CLEAN


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.forecast", __doc__, "device=cpu")
    args = parser.parse_args(argv)
    return predict(args.config, args.overrides, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
