"""The promotion gate: is a model clearly better than persistence and climatology?

One pure rule over skill rows, used by evaluation (to report a verdict) and by
``ModelRegistry.promote`` (to refuse a model). For every variable and every gated lead time
the model's latitude-weighted RMSE must be below the better baseline,
``min(persistence, climatology)``, by at least that lead's margin: 10% at 1, 3 and 6 h,
anything at 12 and 24 h by default. A lead time without scores fails the gate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from pipelines.skill_table import SkillRow, SkillTable

if TYPE_CHECKING:
    from pipelines.models.registry import ModelRecord

DEFAULT_MARGINS: Mapping[int, float] = {1: 0.10, 3: 0.10, 6: 0.10, 12: 0.0, 24: 0.0}
GATE_METRIC = "rmse"
_EVALUATE = "run climate evaluate"


def _baseline(row: SkillRow) -> float | None:
    values = [
        v
        for v in (row.persistence_value, row.climatology_value)
        if v is not None and math.isfinite(v)
    ]
    return min(values) if values else None


def _passes(model: float, threshold: float, margin: float) -> bool:
    if model < threshold:
        return True
    # "at least 10% below" includes exactly 10% below, whatever the rounding.
    return margin > 0 and math.isclose(model, threshold, rel_tol=1e-9)


def _judge(row: SkillRow, margin: float) -> str | None:
    where = f"{row.variable} at lead {row.lead_hours} h"
    model = row.model_value
    if model is None or not math.isfinite(model):
        return f"{where}: the model's RMSE is undefined: {_EVALUATE} again"
    baseline = _baseline(row)
    if baseline is None:
        return f"{where}: no baseline RMSE (persistence, climatology): {_EVALUATE} again"
    threshold = (1.0 - margin) * baseline
    if _passes(model, threshold, margin):
        return None
    gain = (1.0 - model / baseline) * 100.0 if baseline > 0 else float("-inf")
    standing = f"{gain:.1f}% below" if gain >= 0 else f"{-gain:.1f}% above"
    needed = f"at least {margin:.0%} below it (<= {threshold:.4g})" if margin > 0 else "below it"
    return (
        f"{where}: RMSE {model:.4g} is {standing} the better baseline {baseline:.4g} "
        f"(persistence {_number(row.persistence_value)}, "
        f"climatology {_number(row.climatology_value)}); it must be {needed}"
    )


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def gate_problems(
    rows: Sequence[SkillRow],
    variables: Sequence[str],
    margins: Mapping[int, float] = DEFAULT_MARGINS,
    metric: str = GATE_METRIC,
) -> list[str]:
    """Why a model must not be promoted; empty when it passes.

    Parameters
    ----------
    rows
        The model's latest evaluation (``SkillTable.latest_for(sha256)``); other metrics
        are ignored.
    variables
        Every variable (channel name) the model forecasts, e.g. ``card.channel_names``.
    margins
        Lead time (hours) -> the fraction by which the model's score must be below
        ``min(persistence, climatology)``; 0 means just below.
    metric
        The score compared (lower is better).

    Returns
    -------
    list of str
        One human-readable problem per failing (variable, lead time).
    """
    scores = {(r.variable, r.lead_hours): r for r in rows if r.metric == metric}
    if not scores:
        return [f"not evaluated: no {metric.upper()} scores for this model: {_EVALUATE}"]
    problems = []
    for variable in variables:
        for lead, margin in sorted(margins.items()):
            row = scores.get((variable, lead))
            if row is None:
                problems.append(f"{variable}: not evaluated at lead {lead} h: {_EVALUATE}")
                continue
            problem = _judge(row, margin)
            if problem:
                problems.append(problem)
    return problems


def promotion_gate(
    table: SkillTable, margins: Mapping[int, float] = DEFAULT_MARGINS
) -> Callable[[ModelRecord], list[str]]:
    """The gate ``ModelRegistry.promote`` applies: :func:`gate_problems` on the latest scores."""

    def gate(record: ModelRecord) -> list[str]:
        rows = table.latest_for(record.sha256)
        return gate_problems(rows, record.card.channel_names, margins)

    return gate
