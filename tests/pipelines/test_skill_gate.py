"""The promotion gate on hand-made skill rows, and the skill table it reads."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from pipelines.errors import SinkError
from pipelines.ledger import RunLedger
from pipelines.skill_gate import DEFAULT_MARGINS, gate_problems
from pipelines.skill_table import SkillRow, SkillTable
from tests.pipelines.registry_helpers import PERIOD, passing_rows, skill_rows

SHA = "a" * 64


def test_clearly_better_model_passes() -> None:
    assert gate_problems(passing_rows(), ["t2m"]) == []


def test_exactly_ten_percent_better_passes() -> None:
    rows = skill_rows({1: 0.9, 3: 0.9, 6: 0.9, 12: 0.99, 24: 0.99})
    assert gate_problems(rows, ["t2m"]) == []


def test_only_nine_percent_better_at_lead_3_fails() -> None:
    rows = skill_rows({1: 0.8, 3: 0.91, 6: 0.8, 12: 0.8, 24: 0.8})
    problems = gate_problems(rows, ["t2m"])
    assert len(problems) == 1
    assert "t2m at lead 3 h" in problems[0]
    assert "9.0% below" in problems[0] and "at least 10% below" in problems[0]


def test_not_better_at_24_hours_fails() -> None:
    rows = skill_rows({1: 0.8, 3: 0.8, 6: 0.8, 12: 0.99, 24: 1.0})
    problems = gate_problems(rows, ["t2m"])
    assert len(problems) == 1 and "t2m at lead 24 h" in problems[0]


def test_the_better_baseline_counts() -> None:
    # 20% below persistence but not below climatology.
    rows = skill_rows({lead: 0.8 for lead in DEFAULT_MARGINS}, persistence=1.0, climatology=0.7)
    assert len(gate_problems(rows, ["t2m"])) == len(DEFAULT_MARGINS)


def test_missing_lead_fails_and_says_to_evaluate() -> None:
    rows = skill_rows({1: 0.8, 3: 0.8, 6: 0.8, 24: 0.8})
    assert gate_problems(rows, ["t2m"]) == ["t2m: not evaluated at lead 12 h: run climate evaluate"]


def test_no_scores_at_all_fails() -> None:
    problems = gate_problems([], ["t2m"])
    assert len(problems) == 1 and "not evaluated" in problems[0]


def test_every_variable_is_gated() -> None:
    problems = gate_problems(passing_rows(), ["t2m", "msl"])
    assert len(problems) == len(DEFAULT_MARGINS)
    assert all(p.startswith("msl: not evaluated") for p in problems)


def test_other_metrics_are_ignored() -> None:
    rows = passing_rows() + skill_rows({1: 5.0}, metric="mae")
    assert gate_problems(rows, ["t2m"]) == []


def test_undefined_model_score_or_baselines_fail() -> None:
    rows = passing_rows()
    rows[0] = dataclasses.replace(rows[0], model_value=None)
    rows[1] = dataclasses.replace(rows[1], persistence_value=None, climatology_value=None)
    problems = gate_problems(rows, ["t2m"])
    assert len(problems) == 2
    assert "undefined" in problems[0] and "no baseline" in problems[1]


def test_leads_and_margins_are_parameters() -> None:
    rows = skill_rows({48: 0.7})
    assert gate_problems(rows, ["t2m"], margins={48: 0.25}) == []
    assert len(gate_problems(rows, ["t2m"], margins={48: 0.35})) == 1


def test_skill_row_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="metric"):
        skill_rows({1: 0.5}, metric="crps")
    with pytest.raises(ValueError, match="timezone"):
        SkillRow("t2m", 1, "rmse", 1.0, 1.0, 1.0, 3, datetime(2020, 1, 1), PERIOD[1])


# -- the skill table --------------------------------------------------------------------------


def test_record_replaces_a_runs_rows_and_latest_reads_the_newest_run(engine: Engine) -> None:
    runs, table = RunLedger(engine), SkillTable(engine)
    first = runs.start("evaluate", {})
    assert table.latest_for(SHA) == []
    table.record(first, "linear", "v1", SHA, skill_rows({1: 0.5, 3: 0.6}))
    table.record(first, "linear", "v1", SHA, skill_rows({1: 0.4}))  # a re-run replaces
    assert table.latest_for(SHA) == []  # still running: does not count
    runs.finish(first, "succeeded")
    assert [(r.lead_hours, r.model_value) for r in table.latest_for(SHA)] == [(1, 0.4)]

    second = runs.start("evaluate", {})
    table.record(second, "linear", "v1", SHA, passing_rows())
    runs.finish(second, "succeeded")
    latest = table.latest_for(SHA)
    assert latest == sorted(passing_rows(), key=lambda r: r.lead_hours)
    assert latest[0].period_start == PERIOD[0] and latest[0].period_start.tzinfo is UTC
    assert table.latest_run_for(SHA) == second
    assert table.latest_for("b" * 64) == []


def test_latest_skips_runs_that_did_not_succeed(engine: Engine) -> None:
    runs, table = RunLedger(engine), SkillTable(engine)
    good = runs.start("evaluate", {})
    table.record(good, "linear", "v1", SHA, passing_rows())
    runs.finish(good, "succeeded")
    for status in ("failed", "partial", None):
        run = runs.start("evaluate", {})
        table.record(run, "linear", "v1", SHA, skill_rows({1: 9.0}))
        if status is not None:
            runs.finish(run, status, error="boom" if status == "failed" else None)
    assert table.latest_run_for(SHA) == good
    assert table.latest_for(SHA) == sorted(passing_rows(), key=lambda r: r.lead_hours)
    scored = table.scored_runs(SHA)
    assert [r.status for r in scored] == ["running", "partial", "failed", "succeeded"]
    assert scored[-1].run_id == good and scored[-1].succeeded
    assert (scored[0].period_start, scored[0].period_end) == PERIOD
    assert scored[0].period_start.tzinfo is not None and scored[0].recorded_at.tzinfo is not None
    assert [r.model_value for r in table.rows_of(scored[0].run_id, SHA)] == [9.0]


def test_nan_is_stored_as_undefined(engine: Engine) -> None:
    run = RunLedger(engine).start("evaluate", {})
    rows = skill_rows({1: float("nan")}, metric="acc")
    SkillTable(engine).record(run, "linear", "v1", SHA, rows)
    assert SkillTable(engine).rows_of(run, SHA)[0].model_value is None


def test_record_needs_a_known_run_and_unique_rows(engine: Engine) -> None:
    table = SkillTable(engine)
    with pytest.raises(SinkError):
        table.record("no-such-run", "linear", "v1", SHA, skill_rows({1: 0.5}))
    run = RunLedger(engine).start("evaluate", {})
    with pytest.raises(ValueError, match="twice"):
        table.record(run, "linear", "v1", SHA, skill_rows({1: 0.5}) * 2)
    assert table.latest_for(SHA) == []
