"""Initial conditions read from the analysis store, inside the workers."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.analysis_store import AnalysisStore, to_seconds
from pipelines.errors import SchemaError, StoreError
from pipelines.forecast.plan import HOUR
from schemas.model_card import ModelCard


class InitialConditions:
    """Reads the model's input history for initial times from one analysis store.

    Parameters
    ----------
    url, storage_options
        The analysis store.
    card
        The model: variables, levels, history length and time step.
    """

    def __init__(
        self, url: str, card: ModelCard, storage_options: dict[str, Any] | None = None
    ) -> None:
        self.store = AnalysisStore(url, storage_options)
        self.card = card
        state = self.store.state()
        self.times = to_seconds(state.times)
        self.level_index = [state.layout.grid.level.index(lv) for lv in card.inputs.levels]
        dt = card.inputs.time_step_hours * HOUR
        self.offsets = dt * np.arange(card.inputs.history - 1, -1, -1, dtype=np.int64)

    def positions(self, init_seconds: np.ndarray) -> np.ndarray:
        """Time positions [B, history] of each initial time's inputs, oldest first."""
        needed = np.asarray(init_seconds, dtype=np.int64)[:, None] - self.offsets[None, :]
        pos = np.searchsorted(self.times, needed)
        found = (pos < self.times.size) & (
            self.times[np.minimum(pos, self.times.size - 1)] == needed
        )
        if not found.all():
            raise SchemaError(
                f"{self.store.url}: {int((~found).sum())} input time(s) are not in the store "
                "(it changed after the run was planned): re-run the forecast"
            )
        return pos

    def read(self, init_seconds: np.ndarray) -> np.ndarray:
        """float32 [B, history, channels, n_lat, n_lon] for the initial times (epoch seconds)."""
        pos = self.positions(init_seconds)
        unique, inverse = np.unique(pos.ravel(), return_inverse=True)
        try:
            raw = self.store.read(tuple(self.card.inputs.variables), unique)
        except StoreError:
            raise
        except Exception as exc:  # zarr, numcodecs and fsspec raise their own types
            raise StoreError(
                f"{self.store.url}: cannot read the inputs of {len(init_seconds)} initial "
                f"time(s) ({type(exc).__name__}: {str(exc)[:200]}); the store may be damaged: "
                "re-ingest the affected times"
            ) from exc
        parts = []
        for name in self.card.inputs.variables:
            values = raw[name]  # (time, [level], lat, lon)
            if self.level_index:
                parts.append(values[:, self.level_index])
            else:
                parts.append(values[:, None])
        stacked = np.concatenate(parts, axis=1).astype(np.float32, copy=False)
        return stacked[inverse].reshape(*pos.shape, *stacked.shape[1:])
