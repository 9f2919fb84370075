"""One loaded model called from many threads at once answers as it does from one thread."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipelines.models.artefacts import load_card
from pipelines.models.runtime import ModelRuntime

SHIPPED = Path("models/t2m-resconv/model.onnx")
THREADS = 8


def _histories(card_history: int, shape: tuple[int, int], count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [
        rng.normal(280.0, 4.0, (2, card_history, 1, *shape)).astype(np.float32)
        for _ in range(count)
    ]


def test_eight_threads_get_the_answers_of_one() -> None:
    card = load_card(SHIPPED.with_name("model.card.json"))
    runtime = ModelRuntime.load(SHIPPED, card, "cpu", threads=2)
    histories = _histories(card.inputs.history, card.inputs.grid.shape, THREADS * 2)
    hours = [np.array([k % 24, (k + 7) % 24]) for k in range(len(histories))]
    inputs = list(zip(histories, hours, strict=True))
    alone = [runtime.rollout(h, hr, steps=6) for h, hr in inputs]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        calls = [pool.submit(runtime.rollout, h, hr, 6) for h, hr in inputs]
        together = [call.result() for call in calls]
    for one, many in zip(alone, together, strict=True):
        np.testing.assert_array_equal(many, one)
    # and the answers differ between inputs, so the comparison above could fail
    assert not np.array_equal(alone[0], alone[1])
