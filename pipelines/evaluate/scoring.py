"""Scores of a model and its baselines per channel and lead time, as skill-table rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipelines.climatology import lat_weights
from pipelines.evaluate import metrics
from pipelines.evaluate.baselines import climatology_forecast, persistence_forecast
from pipelines.skill_table import SkillRow

METRICS = ("rmse", "bias", "mae", "acc")
SOURCES = ("model", "persistence", "climatology")


@dataclass(frozen=True)
class Scores:
    """Every score of one evaluation.

    ``values[(metric, source)]`` is float64 [channel, lead] (NaN where undefined);
    ``rmse_maps`` and ``bias_maps`` are the model's per-grid-point errors, [channel, lead, lat,
    lon]; ``n_inits[j]`` counts the initial times scored at lead ``lead_hours[j]``.
    """

    channel_names: tuple[str, ...]
    lead_hours: tuple[int, ...]
    n_inits: tuple[int, ...]
    values: dict[tuple[str, str], np.ndarray]
    rmse_maps: np.ndarray
    bias_maps: np.ndarray
    period_start: datetime
    period_end: datetime
    lat: np.ndarray
    lon: np.ndarray

    def get(self, metric: str, source: str, channel: int, lead_index: int) -> float | None:
        """One score; None where undefined."""
        value = float(self.values[(metric, source)][channel, lead_index])
        return value if math.isfinite(value) else None


def _utc(value: np.datetime64) -> datetime:
    seconds = int(np.asarray(value).astype("datetime64[s]").astype(np.int64))
    return datetime.fromtimestamp(seconds, tz=UTC)


def _score(
    metric: str, forecast: np.ndarray, truth: np.ndarray, clim: np.ndarray, w: np.ndarray
) -> float:
    if metric == "acc":
        return metrics.acc(forecast, truth, clim, w)
    function = {"rmse": metrics.rmse, "bias": metrics.bias, "mae": metrics.mae}[metric]
    return function(forecast, truth, w)


def score_forecasts(
    forecasts: np.ndarray,
    values: np.ndarray,
    hours: np.ndarray,
    times: np.ndarray,
    climatology: np.ndarray,
    inits: np.ndarray,
    leads: Sequence[int],
    lat: np.ndarray,
    lon: np.ndarray,
    channel_names: Sequence[str],
) -> Scores:
    """Score model forecasts and both baselines on every init whose verifying time exists.

    Parameters
    ----------
    forecasts
        [init, lead, channel, lat, lon], from :func:`pipelines.evaluate.rollout.rollout_forecasts`.
    values, hours, times
        The analysis: [time, channel, lat, lon], hour of day and datetime64 of every time.
    climatology
        [24, channel, lat, lon] of the training period: the baseline and the ACC reference.
    inits
        Time indices of the initial times (ascending).
    leads
        Lead times in hours (hourly data: index ``init + lead`` verifies).

    Returns
    -------
    Scores
    """
    inits = np.asarray(inits, dtype=np.int64)
    weights = lat_weights(lat, len(lon))
    n_ch, n_lead = values.shape[1], len(leads)
    table = {(m, s): np.full((n_ch, n_lead), np.nan) for m in METRICS for s in SOURCES}
    rmse_maps = np.full((n_ch, n_lead, len(lat), len(lon)), np.nan)
    bias_maps = np.full_like(rmse_maps, np.nan)
    counts = []
    for j, lead in enumerate(leads):
        valid = inits + lead < len(values)
        chosen = inits[valid]
        counts.append(len(chosen))
        if not len(chosen):
            continue
        truth = values[chosen + lead]
        clim = climatology_forecast(climatology, hours, chosen, lead)
        candidates = {
            "model": forecasts[valid, j],
            "persistence": persistence_forecast(values, chosen, lead),
            "climatology": clim,
        }
        for c in range(n_ch):
            for source, forecast in candidates.items():
                for metric in METRICS:
                    table[(metric, source)][c, j] = _score(
                        metric, forecast[:, c], truth[:, c], clim[:, c], weights
                    )
            rmse_maps[c, j] = metrics.rmse_map(candidates["model"][:, c], truth[:, c])
            bias_maps[c, j] = metrics.bias_map(candidates["model"][:, c], truth[:, c])
    return Scores(
        channel_names=tuple(channel_names),
        lead_hours=tuple(int(v) for v in leads),
        n_inits=tuple(counts),
        values=table,
        rmse_maps=rmse_maps,
        bias_maps=bias_maps,
        period_start=_utc(times[inits[0]]),
        period_end=_utc(times[inits[-1]]),
        lat=np.asarray(lat),
        lon=np.asarray(lon),
    )


def skill_rows(scores: Scores) -> list[SkillRow]:
    """One :class:`SkillRow` per (channel, lead, metric) with both baselines' scores."""
    rows = []
    for c, variable in enumerate(scores.channel_names):
        for j, lead in enumerate(scores.lead_hours):
            if not scores.n_inits[j]:
                continue
            for metric in METRICS:
                rows.append(
                    SkillRow(
                        variable=variable,
                        lead_hours=lead,
                        metric=metric,
                        model_value=scores.get(metric, "model", c, j),
                        persistence_value=scores.get(metric, "persistence", c, j),
                        climatology_value=scores.get(metric, "climatology", c, j),
                        n_inits=scores.n_inits[j],
                        period_start=scores.period_start,
                        period_end=scores.period_end,
                    )
                )
    return rows


def card_scores(rows: Sequence[SkillRow], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model card's ``scores``: ``{variable: {metric: {lead: {model, persistence, ...}}}}``.

    ``extra`` (period, split, gate verdict) is stored beside the scores.
    """
    table: dict[str, Any] = {}
    for r in rows:
        table.setdefault(r.variable, {}).setdefault(r.metric, {})[str(r.lead_hours)] = {
            "model": r.model_value,
            "persistence": r.persistence_value,
            "climatology": r.climatology_value,
            "n_inits": r.n_inits,
        }
    return {**(extra or {}), "scores": table}
