"""ONNX export of a trained model, its card, and the check that ONNX Runtime agrees with torch."""

from __future__ import annotations

import logging
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.code_version import code_version
from pipelines.errors import ModelError
from pipelines.models.artefacts import file_sha256
from pipelines.models.runtime import ModelRuntime
from pipelines.training.model import RawFieldModel
from schemas.model_card import GridSpec, ModelCard, ModelIO, ModelOutputs, TensorNames

log = logging.getLogger(__name__)

OPSET = 17
ONNX_NAME = "model.onnx"
CARD_NAME = "model.card.json"


def export_onnx(model: RawFieldModel, example: np.ndarray, hours: np.ndarray, path: Path) -> None:
    """Write ``model`` as ONNX (opset 17) with the card's tensor names and a dynamic batch."""
    names = TensorNames()
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = (
        torch.as_tensor(example, dtype=torch.float32),
        torch.as_tensor(hours, dtype=torch.int64),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # constant-folding notes
        warnings.simplefilter("ignore", category=DeprecationWarning)  # TorchScript exporter
        torch.onnx.export(
            model,
            inputs,
            str(path),
            opset_version=OPSET,
            input_names=[names.fields, names.hour],
            output_names=[names.output],
            dynamic_axes={
                names.fields: {0: "batch"},
                names.hour: {0: "batch"},
                names.output: {0: "batch"},
            },
            dynamo=False,
        )


def check_equivalence(
    model: RawFieldModel,
    runtime: ModelRuntime,
    example: np.ndarray,
    hours: np.ndarray,
    tolerance: float,
) -> float:
    """Largest |ONNX Runtime - torch| over one step on ``example``; ModelError if > tolerance."""
    with torch.no_grad():
        expected = model(torch.as_tensor(example), torch.as_tensor(hours)).numpy()
    found = runtime.step(example, hours)
    difference = float(np.max(np.abs(found - expected)))
    if not difference <= tolerance:
        raise ModelError(
            f"the exported ONNX model differs from the trained torch model by up to "
            f"{difference:.3g} (tolerance {tolerance:.3g}): the export is wrong; do not ship it"
        )
    return difference


def build_card(
    path: Path,
    *,
    name: str,
    version: str | None,
    variables: list[str],
    levels: list[int],
    history: int,
    lat: np.ndarray,
    lon: np.ndarray,
    normalisation: dict[str, Any],
    training: dict[str, Any],
    scores: dict[str, Any] | None = None,
    code: str | None = None,
) -> ModelCard:
    """The card of the ONNX file at ``path`` (its sha256; version defaults to sha256[:12]).

    ``code`` is the code version that trained it (:func:`code_version` now when None).
    """
    sha256 = file_sha256(path)
    return ModelCard(
        name=name,
        version=version or sha256[:12],
        sha256=sha256,
        created_at=datetime.now(UTC),
        inputs=ModelIO(
            variables=variables,
            levels=levels,
            history=history,
            time_step_hours=1,
            grid=GridSpec(lat=[float(v) for v in lat], lon=[float(v) for v in lon]),
        ),
        outputs=ModelOutputs(variables=variables),
        normalisation=normalisation,
        training=training,
        code_version=code or code_version(),
        scores=scores or {},
    )
