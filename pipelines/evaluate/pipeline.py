"""``climate evaluate`` as one function: resolve the model, score it, record, report.

The scores are recorded under the evaluation's run id before the run is marked succeeded; the
promotion gate counts only the scores of runs that succeeded, so a run that fails after
recording never counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from pipelines.evaluate.report import write_report
from pipelines.evaluate.runner import evaluate_model
from pipelines.evaluate.scoring import Scores, skill_rows
from pipelines.fields import load_fields
from pipelines.models.resolve import resolve_device, resolve_model
from pipelines.models.runtime import ModelRuntime
from pipelines.periods import check_held_out
from pipelines.skill_gate import gate_problems
from pipelines.skill_table import SkillRow, SkillTable
from pipelines.storage import fsspec_options
from schemas.evaluate_config import EvaluateConfig
from schemas.model_card import ModelCard
from schemas.settings import Settings


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation scored, recorded and wrote."""

    card: ModelCard
    scores: Scores
    rows: list[SkillRow]
    problems: list[str]
    report: Path

    def summary(self) -> dict[str, object]:
        return {
            **self.card.identity(),
            "rows": len(self.rows),
            "report": str(self.report),
            "gate_passes": not self.problems,
        }


def run_evaluation(
    config: EvaluateConfig, settings: Settings, engine: Engine, run_id: str
) -> Evaluation:
    """Score the configured model on the held-out period; record the scores under ``run_id``.

    Raises
    ------
    ModelError
        The model is refused (missing, corrupt, not matching its card), or the held-out
        period overlaps a training period named in its card.
    SchemaError, ConfigError
        The analysis store or the split does not fit.
    """
    model = resolve_model(config.model, settings, config.storage, engine)
    card = model.card
    check_held_out(config.split.held_out, card)  # never score training data
    device = resolve_device(config.device)
    runtime = ModelRuntime.load(model.path, card, device=device, threads=config.threads)
    options = fsspec_options(config.analysis, config.storage, settings)
    fields = load_fields(
        config.analysis, card.inputs.variables, card.inputs.levels, options, card=card
    )
    scores = evaluate_model(runtime, fields, config.split, config.lead_hours, config.batch_size)
    rows = skill_rows(scores)
    if config.record:
        SkillTable(engine).record(run_id, card.name, card.version, card.sha256, rows)
    problems = gate_problems(rows, card.channel_names)
    report = write_report(
        scores,
        config.report.dir,
        f"Evaluation of {card.name} {card.version}",
        problems,
        config.report.map_leads,
        notes=[
            f"run {run_id}; model sha256 {card.sha256}",
            f"analysis {config.analysis}; climatology from the training period only",
        ],
    )
    return Evaluation(card, scores, rows, problems, report)
