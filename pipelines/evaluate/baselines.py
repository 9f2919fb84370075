"""The reference forecasts every model is judged against: persistence and climatology.

The climatology is the hour-of-day mean of the training period only, so scores on a
held-out period never see its data.
"""

from __future__ import annotations

import numpy as np


def persistence_forecast(values: np.ndarray, inits: np.ndarray, lead: int) -> np.ndarray:
    """The field at each initial time, as the forecast for ``lead`` steps later."""
    del lead  # persistence does not depend on the lead time
    return values[np.asarray(inits)]


def climatology_forecast(
    climatology: np.ndarray, hours: np.ndarray, inits: np.ndarray, lead: int
) -> np.ndarray:
    """The climatology at the verifying hour ``hours[init] + lead``."""
    return climatology[(hours[np.asarray(inits)] + lead) % 24]
