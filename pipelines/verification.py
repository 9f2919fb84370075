"""The rolling verification: how the kept forecast runs did against the analyses that arrived.

For every committed forecast run the store keeps (see :mod:`pipelines.forecast.store`), each
(variable, lead time, initial time) whose valid time is in the analysis store is scored:
latitude-weighted RMSE and bias against the analysis. The rows of a run are replaced in one
transaction each time, so re-verifying never duplicates; ``verification_scores`` keeps the
rows of runs the store no longer keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from sqlalchemy import Engine, Table, delete, insert, select

from pipelines.climatology import lat_weights
from pipelines.db import transaction
from pipelines.forecast.store import ForecastStore, open_forecast_store
from schemas.operations_tables import VerificationScore
from schemas.tables import utcnow

_SCORES: Table = VerificationScore.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Verified:
    """One forecast field scored against its verifying analysis."""

    variable: str
    lead_hours: int
    init_time: datetime
    valid_time: datetime
    rmse: float
    bias: float
    n_points: int


def _utc(value: np.datetime64) -> datetime:
    return datetime.fromtimestamp(int(value.astype("datetime64[s]").astype("int64")), tz=UTC)


def score_run(forecast: xr.Dataset, analysis: xr.Dataset) -> list[Verified]:
    """Every field of ``forecast`` whose valid time ``analysis`` holds, scored against it."""
    times = analysis.time.values.astype("datetime64[ns]")
    valid = forecast.valid_time.values.astype("datetime64[ns]")
    weights = lat_weights(forecast.lat.values, forecast.sizes["lon"])
    leads = (forecast.lead_time.values / np.timedelta64(1, "h")).astype(int)
    found: list[Verified] = []
    for name in forecast.data_vars:
        if name not in analysis.data_vars:
            continue
        for j, lead in enumerate(leads):
            rows = np.nonzero(np.isin(valid[:, j], times))[0]
            if rows.size == 0:
                continue
            fields = forecast[name].isel(lead_time=j, init_time=rows).values.astype(np.float64)
            truth = analysis[name].sel(time=valid[rows, j]).values.astype(np.float64)
            error = fields - truth
            finite = np.isfinite(error)
            for k, i in enumerate(rows):
                ok = finite[k]
                w = weights[ok]
                e = error[k][ok]
                found.append(
                    Verified(
                        variable=str(name),
                        lead_hours=int(lead),
                        init_time=_utc(forecast.init_time.values[i]),
                        valid_time=_utc(valid[i, j]),
                        rmse=float(np.sqrt(np.sum(w * e**2) / np.sum(w))) if e.size else np.nan,
                        bias=float(np.sum(w * e) / np.sum(w)) if e.size else np.nan,
                        n_points=int(e.size),
                    )
                )
    return found


def record(engine: Engine, run_id: str, model_sha256: str, scores: Sequence[Verified]) -> int:
    """Replace the verification rows of ``run_id`` with ``scores`` in one transaction."""
    now = utcnow()
    values = [
        {
            "run_id": run_id,
            "model_sha256": model_sha256,
            "verified_at": now,
            "variable": s.variable,
            "lead_hours": s.lead_hours,
            "init_time": s.init_time,
            "valid_time": s.valid_time,
            "rmse": s.rmse if np.isfinite(s.rmse) else None,
            "bias": s.bias if np.isfinite(s.bias) else None,
            "n_points": s.n_points,
        }
        for s in scores
    ]
    with transaction(engine) as conn:
        conn.execute(delete(_SCORES).where(_SCORES.c.run_id == run_id))
        if values:
            conn.execute(insert(_SCORES), values)
    return len(values)


def verify_store(
    forecast_url: str,
    analysis_url: str,
    engine: Engine,
    storage_options: dict[str, Any] | None = None,
) -> int:
    """Score every kept run of the forecast store against the analysis store; rows written."""
    analysis = xr.open_zarr(analysis_url, storage_options=storage_options or None)
    written = 0
    for run in ForecastStore(forecast_url, storage_options).committed():
        forecast = open_forecast_store(forecast_url, run.run_id, storage_options)
        sha256 = str(forecast.attrs.get("model", {}).get("sha256", ""))
        written += record(engine, run.run_id, sha256, score_run(forecast, analysis))
    return written


def verification_rows(engine: Engine, since: datetime | None = None) -> list[dict[str, Any]]:
    """The verification table (as dicts), oldest valid time first; from ``since`` if given."""
    stmt = select(_SCORES).order_by(_SCORES.c.valid_time, _SCORES.c.lead_hours)
    if since is not None:
        stmt = stmt.where(_SCORES.c.valid_time >= since)
    with transaction(engine, write=False) as conn:
        return [dict(row._mapping) for row in conn.execute(stmt)]


def write_report(
    engine: Engine, directory: str | Path, leads: Sequence[int] = (1, 6, 12, 24)
) -> Path:
    """A Markdown page and a PNG of the RMSE over valid time per lead; returns the page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rows = verification_rows(engine)
    figure, axis = plt.subplots(figsize=(9, 4))
    lines = [
        "# Rolling verification",
        "",
        "| lead h | fields | mean RMSE | mean bias |",
        "|---|---|---|---|",
    ]
    for lead in leads:
        chosen = [r for r in rows if r["lead_hours"] == lead and r["rmse"] is not None]
        if not chosen:
            continue
        axis.plot(
            [r["valid_time"] for r in chosen], [r["rmse"] for r in chosen], ".-", label=f"{lead} h"
        )
        rmse = np.mean([r["rmse"] for r in chosen])
        bias = np.mean([r["bias"] for r in chosen if r["bias"] is not None])
        lines.append(f"| {lead} | {len(chosen)} | {rmse:.3f} | {bias:.3f} |")
    axis.set_xlabel("valid time (UTC)")
    axis.set_ylabel("lat-weighted RMSE")
    axis.set_title("Forecasts against the analyses that arrived")
    if axis.lines:
        axis.legend()
    figure.autofmt_xdate()
    figure.savefig(out / "verification.png", dpi=100)
    plt.close(figure)
    lines += ["", "![RMSE over valid time](verification.png)", ""]
    page = out / "verification.md"
    page.write_text("\n".join(lines))
    return page
