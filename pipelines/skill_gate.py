"""The promotion gate: is a model clearly better than persistence and climatology?

One pure rule over skill rows (:func:`gate_problems`), used by evaluation (to report a verdict)
and, through :func:`promotion_verdict`, by ``ModelRegistry.promote`` (to refuse a model; there
is no way around it). For every variable and every gated lead time the model's
latitude-weighted RMSE must be below the better baseline, ``min(persistence, climatology)``,
by at least that lead's margin: 10% at 1, 3 and 6 h, anything at 12 and 24 h by default. A
lead time without scores fails the gate.

Which scores count (:func:`promotion_verdict`): those of the newest evaluation run that
SUCCEEDED in the run ledger and whose scored initial times do not overlap any training period
named in the model's card (:mod:`pipelines.periods`). The scores of a failed, partial or still
running run, or of a run that scored training data, never count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipelines.errors import ModelError
from pipelines.periods import Period, overlapping, show_period, show_periods, training_periods
from pipelines.skill_table import ScoredRun, SkillRow, SkillTable
from schemas.model_card import ModelCard

DEFAULT_MARGINS: Mapping[int, float] = {1: 0.10, 3: 0.10, 6: 0.10, 12: 0.0, 24: 0.0}
GATE_METRIC = "rmse"
_EVALUATE = "run climate evaluate"
_LISTED_RUNS = 5  # skipped runs named in a refusal; older ones are counted


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
        The scores of the evaluation that counts (see :func:`promotion_verdict`); other
        metrics are ignored.
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


@dataclass(frozen=True)
class Verdict:
    """The promotion gate's verdict on a model file.

    ``run`` is the evaluation that counted (None when none does), ``rows`` its scores and
    ``problems`` why the model must not be promoted (empty when it passes).
    """

    run: ScoredRun | None
    rows: list[SkillRow]
    problems: list[str]

    @property
    def passes(self) -> bool:
        return not self.problems


def _why_not_counted(run: ScoredRun, clash: Sequence[Period]) -> str:
    if not run.succeeded:
        return (
            f"run {run.run_id} does not count: its status in the run ledger is {run.status!r}, "
            "and only the scores of a succeeded evaluation count"
        )
    return (
        f"run {run.run_id} does not count: the initial times it scored "
        f"({show_period((run.period_start, run.period_end))}) overlap the model's training "
        f"period(s) {show_periods(clash)}"
    )


def promotion_verdict(
    table: SkillTable, card: ModelCard, margins: Mapping[int, float] = DEFAULT_MARGINS
) -> Verdict:
    """The gate ``ModelRegistry.promote`` applies, on the evaluation that counts.

    Parameters
    ----------
    table
        The skill table (it reads the run ledger of the same database).
    card
        The model's card: its file hash, channels and training periods.
    margins
        As for :func:`gate_problems`.

    Returns
    -------
    Verdict
        The newest run that succeeded and scored no training period, judged by
        :func:`gate_problems`; newer runs that did not count are named in the problems. When
        no run counts, a "not evaluated" problem and why each run did not count.
    """
    try:
        trained = training_periods(card)
    except ModelError as exc:
        return Verdict(None, [], [str(exc)])
    skipped: list[str] = []
    runs = table.scored_runs(card.sha256)
    for run in runs:
        clash = overlapping(trained, run.period_start, run.period_end)
        if not run.succeeded or clash:
            skipped.append(_why_not_counted(run, clash))
            continue
        rows = table.rows_of(run.run_id, card.sha256)
        problems = gate_problems(rows, card.channel_names, margins)
        if problems:
            problems += _listed(skipped)
        return Verdict(run, rows, problems)
    if not runs:
        never = f"not evaluated: no scores were recorded for this model file: {_EVALUATE}"
        return Verdict(None, [], [never])
    headline = (
        f"not evaluated: none of the {len(runs)} evaluation run(s) that scored this model "
        f"counts: {_EVALUATE} again, to success, on a held_out period outside the model's "
        "training periods" + (f" ({show_periods(trained)})" if trained else "")
    )
    return Verdict(None, [], [headline, *_listed(skipped)])


def _listed(notes: list[str]) -> list[str]:
    if len(notes) <= _LISTED_RUNS:
        return notes
    return [*notes[:_LISTED_RUNS], f"... and {len(notes) - _LISTED_RUNS} older run(s)"]
