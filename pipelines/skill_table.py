"""Skill scores of evaluated models, over the ``skill_scores`` table.

An evaluation run records one :class:`SkillRow` per (variable, lead time, metric): the model's
score and the persistence and climatology baselines' scores over the same initial times. A
re-run of the same run id replaces its rows. Only the scores of a run that SUCCEEDED in the
run ledger (``runs``) count: :meth:`SkillTable.latest_for` reads the latest such run, and the
promotion gate (:mod:`pipelines.skill_gate`) picks among :meth:`SkillTable.scored_runs`. The
rows of a failed, partial or still running evaluation stay in the table, for inspection only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Row, Table, delete, func, insert, select

from pipelines.db import transaction
from schemas.registry_tables import SKILL_METRICS, SkillScore
from schemas.tables import Run, utcnow

_SCORES: Table = SkillScore.__table__  # type: ignore[assignment]
_RUNS: Table = Run.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class SkillRow:
    """One score of a model and its baselines.

    ``variable`` is a channel name as :attr:`schemas.model_card.ModelCard.channel_names` gives
    it (``t2m``, ``z@500``). RMSE rows are latitude-weighted. A baseline value is ``None``
    where the metric is undefined for it (e.g. the ACC of climatology).
    """

    variable: str
    lead_hours: int
    metric: str
    model_value: float | None
    persistence_value: float | None
    climatology_value: float | None
    n_inits: int
    period_start: datetime
    period_end: datetime

    def __post_init__(self) -> None:
        if self.metric not in SKILL_METRICS:
            raise ValueError(
                f"metric {self.metric!r} is not one of {sorted(SKILL_METRICS)}; use one of those"
            )
        if not self.variable or len(self.variable) > 32:
            raise ValueError(f"variable {self.variable!r} must be 1..32 characters")
        if self.lead_hours < 0:
            raise ValueError(f"lead_hours {self.lead_hours} is negative")
        if self.n_inits < 0:
            raise ValueError(f"n_inits {self.n_inits} is negative")
        for name in ("period_start", "period_end"):
            value: datetime = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"{name} {value.isoformat()} must be timezone-aware (UTC)")
        if self.period_end < self.period_start:
            raise ValueError(
                f"period_end {self.period_end.isoformat()} is before period_start "
                f"{self.period_start.isoformat()}"
            )


@dataclass(frozen=True)
class ScoredRun:
    """One evaluation run that recorded scores of a model file, and how it ended.

    ``status`` is the run's status in the run ledger (``running``, ``succeeded``, ``failed``,
    ``partial``); only a ``succeeded`` run counts. ``period_start .. period_end`` span the
    initial times its rows scored (both included).
    """

    run_id: str
    status: str
    recorded_at: datetime
    period_start: datetime
    period_end: datetime

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


def _utc(value: datetime | str) -> datetime:
    """An aggregate's timestamp as aware UTC (SQLite may give it back naive or as text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _skill_row(row: Row[Any]) -> SkillRow:
    m = row._mapping
    return SkillRow(
        variable=m["variable"],
        lead_hours=m["lead_hours"],
        metric=m["metric"],
        model_value=m["model_value"],
        persistence_value=m["persistence_value"],
        climatology_value=m["climatology_value"],
        n_inits=m["n_inits"],
        period_start=m["period_start"],
        period_end=m["period_end"],
    )


class SkillTable:
    """Record and read skill scores.

    Parameters
    ----------
    engine
        A migrated engine (see :func:`pipelines.db.make_engine` and ``migrate``).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
        self,
        run_id: str,
        model_name: str,
        model_version: str,
        model_sha256: str,
        rows: Sequence[SkillRow],
    ) -> int:
        """Replace the scores of ``run_id`` with ``rows`` in one transaction.

        Non-finite values (NaN, inf) are stored as NULL: "not defined".

        Parameters
        ----------
        run_id
            An evaluation run recorded in the run ledger (``runs``).
        model_name, model_version, model_sha256
            The model scored (its registry name, version and file hash).
        rows
            At most one row per (variable, lead_hours, metric).

        Returns
        -------
        int
            Number of rows written.

        Raises
        ------
        ValueError
            Two rows share (variable, lead_hours, metric).
        SinkError
            The database refused the write (e.g. no run of that id).
        """
        keys = [(r.variable, r.lead_hours, r.metric) for r in rows]
        if len(set(keys)) != len(keys):
            twice = sorted({k for k in keys if keys.count(k) > 1})
            raise ValueError(f"skill rows listed twice (variable, lead_hours, metric): {twice}")
        now = utcnow()
        values = [
            {
                "run_id": run_id,
                "model_name": model_name,
                "model_version": model_version,
                "model_sha256": model_sha256,
                "variable": r.variable,
                "lead_hours": int(r.lead_hours),
                "metric": r.metric,
                "model_value": _finite_or_none(r.model_value),
                "persistence_value": _finite_or_none(r.persistence_value),
                "climatology_value": _finite_or_none(r.climatology_value),
                "n_inits": int(r.n_inits),
                "period_start": r.period_start,
                "period_end": r.period_end,
                "created_at": now,
            }
            for r in rows
        ]
        with transaction(self.engine) as conn:
            conn.execute(delete(_SCORES).where(_SCORES.c.run_id == run_id))
            if values:
                conn.execute(insert(_SCORES), values)
        return len(values)

    def scored_runs(self, model_sha256: str) -> list[ScoredRun]:
        """Every run that recorded scores of this model file, newest first, with its status.

        Parameters
        ----------
        model_sha256
            The model file's hash.

        Returns
        -------
        list of ScoredRun
            Ordered by when the scores were recorded (the newest first); [] if never scored.
        """
        recorded = func.max(_SCORES.c.created_at)
        stmt = (
            select(
                _SCORES.c.run_id,
                _RUNS.c.status,
                recorded.label("recorded_at"),
                func.min(_SCORES.c.period_start).label("period_start"),
                func.max(_SCORES.c.period_end).label("period_end"),
            )
            .join(_RUNS, _RUNS.c.run_id == _SCORES.c.run_id)
            .where(_SCORES.c.model_sha256 == model_sha256)
            .group_by(_SCORES.c.run_id, _RUNS.c.status)
            .order_by(recorded.desc(), _SCORES.c.run_id.desc())
        )
        with transaction(self.engine, write=False) as conn:
            rows = conn.execute(stmt).all()
        return [
            ScoredRun(
                run_id=row.run_id,
                status=row.status,
                recorded_at=_utc(row.recorded_at),
                period_start=_utc(row.period_start),
                period_end=_utc(row.period_end),
            )
            for row in rows
        ]

    def rows_of(self, run_id: str, model_sha256: str) -> list[SkillRow]:
        """The scores one run recorded for this model file, whatever the run's status.

        Sorted by variable, metric and lead time.
        """
        stmt = (
            select(_SCORES)
            .where(_SCORES.c.run_id == run_id, _SCORES.c.model_sha256 == model_sha256)
            .order_by(_SCORES.c.variable, _SCORES.c.metric, _SCORES.c.lead_hours)
        )
        with transaction(self.engine, write=False) as conn:
            return [_skill_row(row) for row in conn.execute(stmt)]

    def latest_run_for(self, model_sha256: str) -> str | None:
        """The id of the most recent SUCCEEDED run that scored this model file; None if none.

        Runs that failed, ended partial or are still running never count, even when they are
        newer.
        """
        for run in self.scored_runs(model_sha256):
            if run.succeeded:
                return run.run_id
        return None

    def latest_for(self, model_sha256: str) -> list[SkillRow]:
        """The rows of the most recent succeeded run that scored this model; [] if none.

        Sorted by variable, metric and lead time.
        """
        run_id = self.latest_run_for(model_sha256)
        return [] if run_id is None else self.rows_of(run_id, model_sha256)
