"""``make demo``: the main job end to end on the embedded defaults (local files, SQLite, local Ray).

Uses the model registry the way production does: ingests the bundled ERA5 sample into
``output/analysis.zarr``, registers the shipped reference model, evaluates that registered
version on the held-out last week (skill table in the database, report in
``output/reports/evaluate``), promotes it through the registry's skill gate, then forecasts
with ``{name, version: promoted}`` into ``output/forecast.zarr`` and the ``forecasts`` table.
Last, it starts the online application (``configs/serve.yaml``, API keys required) on a free
local port, creates an API key for itself, asks one point forecast (key in the ``apikey`` query
parameter) and one prediction (``Authorization: Bearer``), prints both, revokes the key and
shuts Serve down.
"""

from __future__ import annotations

import io
import json
import sys
import urllib.parse
import urllib.request
from typing import Any

import numpy as np
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
SERVE_CONFIG = "configs/serve.yaml"
LONDON = {"latitude": 51.5, "longitude": -0.12}
POINT_QUERY = {**LONDON, "hourly": "temperature_2m", "forecast_hours": 6}
PREDICT_LEADS = (1, 6, 12)


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


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _get(url: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def _show_point(url: str, key: str) -> None:
    query = urllib.parse.urlencode({**POINT_QUERY, "apikey": key})  # as Open-Meteo clients do
    body = _get(f"{url}/v1/forecast?{query}")
    hourly, units = body["hourly"], body["hourly_units"]
    values = ", ".join(f"{v:.1f}" for v in hourly["temperature_2m"])
    console.print(
        f"GET /v1/forecast London ({body['latitude']}, {body['longitude']}), run "
        f"{body['run_id']}: temperature_2m [{units['temperature_2m']}] from "
        f"{hourly['time'][0]}: {values}",
        highlight=False,
    )


def _show_prediction(url: str, key: str, model: str, analysis_url: str) -> None:
    name, version = model.split(":", 1)
    card = _get(f"{url}/v1/models/{name}/{version}", _bearer(key))["card"]
    history = card["inputs"]["history"]
    analysis = xr.open_zarr(analysis_url).t2m.isel(time=slice(-history, None))
    fields = np.asarray(analysis.values[:, None], dtype=np.float32)  # [history, 1, lat, lon]
    init = str(analysis.time.values[-1])[:19] + "Z"
    query = urllib.parse.urlencode(
        {"init_time": init, "lead_hours": ",".join(map(str, PREDICT_LEADS))}
    )
    buffer = io.BytesIO()
    np.save(buffer, fields)
    request = urllib.request.Request(
        f"{url}/v1/predict?{query}",
        data=buffer.getvalue(),
        headers={"Content-Type": "application/x-npy", **_bearer(key)},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        out = np.load(io.BytesIO(response.read()))  # [lead, 1, lat, lon]
        used = response.headers["X-Model"]
    lat = int(np.abs(np.asarray(card["inputs"]["grid"]["lat"]) - LONDON["latitude"]).argmin())
    lon = int(np.abs(np.asarray(card["inputs"]["grid"]["lon"]) - LONDON["longitude"]).argmin())
    leads = ", ".join(
        f"+{lead} h {out[i, 0, lat, lon] - 273.15:.1f} °C (grid mean {out[i].mean():.1f} K)"
        for i, lead in enumerate(PREDICT_LEADS)
    )
    console.print(
        f"POST /v1/predict ({used}, .npy {list(fields.shape)} from {init}): London {leads}",
        highlight=False,
    )


def _serve_step() -> int:
    """The online application on a free local port: one point query, one prediction, each
    with an API key made for the demo and revoked afterwards."""
    from jobs.keys import open_keys
    from jobs.serve import free_port, load_serve_file, quiet_serve_logs, serving, wait_ready
    from schemas.serve_config import ServeFile
    from schemas.settings import load_settings

    spec = load_serve_file(SERVE_CONFIG, host="127.0.0.1", port=free_port())
    data = spec.model_dump()
    for app in data["applications"]:  # small reservations: the demo's Ray may have few CPUs
        app["args"]["ingress"]["num_cpus"] = 0.25
        app["args"]["predictor"]["num_cpus"] = 0.25
    spec = ServeFile.model_validate(data)
    joined = load_settings().ray_address is not None
    quiet_serve_logs()
    try:
        keys = open_keys()
        record, key = keys.create("make-demo")
        console.print(f"API key {record.key_id} created for the demo (revoked at its end)")
        try:
            with serving(spec, joined) as url:
                ready = wait_ready(url)
                console.print(f"serving at {url}: run {ready['run_id']}, model {ready['model']}")
                _show_point(url, key)
                _show_prediction(url, key, ready["model"], "output/analysis.zarr")
        finally:
            keys.revoke(record.key_id)
    except (ClimateError, OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return EXIT_ERROR
    return EXIT_OK


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
    status = predict(FORECAST_CONFIG, [])
    if status != EXIT_OK:
        return status
    console.print("\n[bold]online[/bold]: the Serve application answers one query of each kind")
    return _serve_step()


if __name__ == "__main__":
    sys.exit(main())
