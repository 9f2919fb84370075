"""One training run: seeded training -> ONNX + card -> equivalence check -> held-out scores.

The one module that composes the ``training/`` room (fit, export) with the ``evaluate/`` room
(scores of the exported file on the held-out period); neither room imports the other.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import Engine

from pipelines.code_version import code_version
from pipelines.evaluate.runner import evaluate_model
from pipelines.evaluate.scoring import Scores, card_scores, skill_rows
from pipelines.fields import Fields, load_fields, split_masks
from pipelines.models.registry import ModelRegistry
from pipelines.models.runtime import ModelRuntime
from pipelines.skill_gate import gate_problems
from pipelines.storage import fsspec_options
from pipelines.training.export import (
    CARD_NAME,
    ONNX_NAME,
    build_card,
    check_equivalence,
    export_onnx,
)
from pipelines.training.train import TrainedModel, train_model
from pipelines.training.windows import window_starts
from schemas.model_card import ModelCard
from schemas.settings import Settings
from schemas.train_config import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingResult:
    """What a training run wrote and how the model scored on the held-out period."""

    onnx_path: Path
    card_path: Path
    card: ModelCard
    scores: Scores
    max_onnx_difference: float
    trained: TrainedModel
    registered: str | None = None  # the registry's artefact URL when it was registered

    def summary(self) -> dict[str, object]:
        """What the run ledger records."""
        return {
            **self.card.identity(),
            "onnx": str(self.onnx_path),
            "card": str(self.card_path),
            "registered": self.registered,
            "seconds": round(self.trained.seconds, 1),
            "onnx_max_abs_difference": self.max_onnx_difference,
        }


def _iso(value: np.datetime64) -> str:
    return str(np.datetime_as_string(value, unit="s")) + "Z"


def _periods(times: np.ndarray, mask: np.ndarray) -> list[list[str]]:
    """Contiguous runs of ``mask`` as [first, last] ISO times."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0] - 1
    return [[_iso(times[a]), _iso(times[b])] for a, b in zip(starts, ends, strict=True)]


def _example(fields: Fields, history: int, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two real histories (held-out ones when the period is long enough) for export and checks."""
    inside = held if held.sum() >= history else np.ones_like(held)
    candidates = window_starts(inside, history)
    picks = candidates[[0, len(candidates) // 2]]
    example = np.stack([fields.values[s : s + history] for s in picks]).astype(np.float32)
    hours = (fields.hours[picks + history - 1] + 1) % 24
    return example, hours.astype(np.int64)


def train_from_config(
    config: TrainConfig,
    settings: Settings,
    engine: Engine,
    report: Callable[[str], None] | None = None,
) -> TrainingResult:
    """``climate train``: read the analysis store, train, export, score; register if asked.

    Raises
    ------
    ModelError
        The export disagrees with the trained model, or the registry refused it.
    SchemaError, SourceError
        The analysis store does not hold what the config names.
    """
    analysis = config.analysis
    options = fsspec_options(analysis.url, config.storage, settings)
    fields = load_fields(analysis.url, analysis.variables, analysis.levels, options)
    result = run_training(config, fields, report)
    if not config.output.register_model:
        return result
    registry = ModelRegistry.from_settings(engine, settings, config.storage)
    record = registry.register(result.onnx_path, result.card)
    return dataclasses.replace(result, registered=record.artefact_url)


def run_training(
    config: TrainConfig,
    fields: Fields,
    report: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Train on ``config.split.train``, export, check the export, score on the held-out period.

    The ONNX file and its card are written to ``config.output.dir`` (``model.onnx``,
    ``model.card.json``) only once the export passed the check; the card's ``scores`` hold
    the held-out evaluation.

    Raises
    ------
    ModelError
        The exported graph disagrees with the torch model beyond ``output.tolerance_k``.
    SchemaError
        A period holds no time of the store.
    """
    code = code_version()  # before anything is written: the code that trains, not what it wrote
    train_mask, _ = split_masks(fields.times, config.split.held_out, config.split.train)
    trained = train_model(fields, train_mask, config.design, config.schedule, report)
    return publish_model(config, fields, trained, code)


def publish_model(
    config: TrainConfig, fields: Fields, trained: TrainedModel, code: str | None = None
) -> TrainingResult:
    """Export a trained model to ``config.output.dir``, check the export, score it.

    ``trained`` must have been trained on ``config.split`` with ``config.design`` (the card
    says so); :func:`pipelines.training.train.with_damping` gives the same fit with another
    ``design.damping``.
    """
    _, held = split_masks(fields.times, config.split.held_out, config.split.train)
    out_dir = Path(config.output.dir)
    onnx_path, card_path = out_dir / ONNX_NAME, out_dir / CARD_NAME
    partial = out_dir / f"{ONNX_NAME}.partial"
    example, hours = _example(fields, config.design.history, held)
    export_onnx(trained.model, example, hours, partial)
    try:
        card, scores, difference = _check_and_score(
            config, fields, trained, partial, example, hours, code
        )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(onnx_path)
    card.write(card_path)
    log.info("wrote %s and %s (sha256 %s)", onnx_path, card_path, card.sha256)
    return TrainingResult(onnx_path, card_path, card, scores, difference, trained)


def _check_and_score(
    config: TrainConfig,
    fields: Fields,
    trained: TrainedModel,
    onnx_path: Path,
    example: np.ndarray,
    hours: np.ndarray,
    code: str | None,
) -> tuple[ModelCard, Scores, float]:
    """Card the exported file, check it against torch, score it on the held-out period."""
    split, design, schedule = config.split, config.design, config.schedule
    train_mask, held = split_masks(fields.times, split.held_out, split.train)
    channel_scale = dict(zip(fields.channel_names, trained.scale.tolist(), strict=True))
    card = build_card(
        onnx_path,
        name=config.output.name,
        version=config.output.version,
        variables=list(config.analysis.variables),
        levels=list(config.analysis.levels),
        history=design.history,
        lat=fields.lat,
        lon=fields.lon,
        normalisation={
            "kind": "anomaly from the training period's hour-of-day climatology / channel std",
            "scale": channel_scale,
            "climatology": "[24, channels, lat, lon], baked into the graph",
        },
        training={
            "analysis": config.analysis.url,
            "periods": _periods(fields.times, train_mask),
            "held_out": _periods(fields.times, held),
            "seed": schedule.seed,
            "design": design.model_dump(mode="json"),
            "schedule": schedule.model_dump(mode="json"),
            "windows": trained.n_windows,
            "final_loss": trained.losses[-1],
            "seconds": round(trained.seconds, 1),
            "torch": torch.__version__,
        },
        code=code,
    )
    runtime = ModelRuntime.load(onnx_path, card, device="cpu", threads=schedule.threads)
    difference = check_equivalence(
        trained.model, runtime, example, hours, config.output.tolerance_k
    )
    scores = evaluate_model(runtime, fields, split, config.lead_hours)
    rows = skill_rows(scores)
    extra = {
        "evaluation": {
            "held_out": _periods(fields.times, held),
            "climatology": "hour of day, training periods only",
            "lead_hours": list(config.lead_hours),
            "onnx_max_abs_difference": difference,
        },
        "gate_problems": gate_problems(rows, card.channel_names),
    }
    return card.model_copy(update={"scores": card_scores(rows, extra)}), scores, difference
