"""The reference model as torch modules (needs the ``train`` extra).

:class:`AnomalyCore` maps normalised anomaly fields to the next anomaly;
:class:`RawFieldModel` wraps it with the training climatology and scale so that the exported
graph reads and writes raw physical units, as the model card's contract requires.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from schemas.train_config import ModelDesign


def _unit_coordinate(values: np.ndarray) -> Tensor:
    """Coordinates scaled to [-1, 1] (zeros for a single point)."""
    v = torch.tensor(np.asarray(values, dtype=np.float64))
    half = float(v.max() - v.min()) / 2.0
    mid = float(v.max() + v.min()) / 2.0
    return ((v - mid) / half if half > 0 else torch.zeros_like(v)).to(torch.float32)


def _pad(z: Tensor, kernel: int) -> Tensor:
    p = kernel // 2
    return functional.pad(z, (p, p, p, p), mode="replicate") if p else z


def _anomaly_inputs(lagged: list[Tensor], mean: Tensor | None) -> list[Tensor]:
    """The lagged anomalies and, when the design has one, their running mean."""
    return [*lagged, mean] if mean is not None else list(lagged)


def _zeroed(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class AnomalyCore(nn.Module):
    """One step in normalised anomaly space.

    ``next = lag0 + stencil(features) + cnn(features)`` where the features are the anomalies
    at the design's lags, the mean of the last ``mean_window`` anomalies, sin/cos of the
    target hour and lat/lon coordinates. The stencil and the CNN's last layer start at zero,
    so the untrained model is persistence of the anomaly.

    With ``design.invariant`` the features are the lagged anomalies and the mean *minus the
    latest anomaly*: the CNN sees only how the recent past differs from now, so a warm or cold
    spell outside the training range does not push it out of distribution; the latest anomaly
    itself reaches only the linear stencil (damping towards climatology stays linear).

    With ``design.regime`` the stencil also sees every anomaly input scaled by the regime
    index ``r = tanh(domain mean of |anomaly now - anomaly 24 h ago|)`` per channel, and
    ``r`` itself: how much of the anomaly to keep depends on how settled the weather has been
    over the whole field (a settled spell persists, a changeable one returns to climatology).
    With ``design.persistence_regime`` the same inputs are also scaled by the uncentred pattern
    correlation of the anomaly now with the anomaly 24 h ago: how much of the field's
    departure from climatology survived the last day.
    """

    def __init__(self, design: ModelDesign, channels: int, lat: np.ndarray, lon: np.ndarray):
        super().__init__()
        self.history = design.history
        self.lags = list(design.lags)
        self.mean_window = design.mean_window
        self.kernel = design.kernel
        self.skip_kernel = design.skip_kernel
        self.channels = channels
        self.invariant = design.invariant
        self.regime = design.regime
        self.persistence_regime = design.persistence_regime
        uses_lag_24 = design.regime or design.persistence_regime
        self.regime_lag = self.lags.index(24) if uses_lag_24 else None
        yy = _unit_coordinate(lat)
        xx = _unit_coordinate(lon)
        grid = torch.stack(
            [yy[:, None].expand(len(yy), len(xx)), xx[None].expand(len(yy), len(xx))]
        )
        self.coords: Tensor
        self.register_buffer("coords", grid[None])
        lagged_inputs = len(self.lags) - int(self.invariant) + int(self.mean_window > 0)
        n_in = channels * lagged_inputs + 4
        indices = int(design.regime) + int(design.persistence_regime)
        regime_inputs = (len(self.lags) + int(self.mean_window > 0) + 1) * indices
        skip_in = n_in + channels * (int(self.invariant) + regime_inputs)
        self.skip = _zeroed(nn.Conv2d(skip_in, channels, design.skip_kernel))
        convs = []
        width = n_in
        for _ in range(design.layers):
            convs.append(nn.Conv2d(width, design.hidden, design.kernel))
            width = design.hidden
        self.convs = nn.ModuleList(convs)
        self.out: nn.Conv2d | None = None
        if design.layers > 0:
            self.out = _zeroed(nn.Conv2d(width, channels, design.kernel))

    def features(self, lagged: list[Tensor], mean: Tensor | None, hour: Tensor) -> Tensor:
        """[B, n_in, lat, lon] from lagged anomalies [B, C, lat, lon] and the target hour."""
        batch = lagged[0].shape[0]
        parts = _anomaly_inputs(lagged, mean)
        if self.invariant:
            parts = [part - lagged[0] for part in parts[1:]]
        angle = hour.to(torch.float32) * (2 * math.pi / 24)
        ones = torch.ones_like(lagged[0][:, :1])
        parts.append(torch.sin(angle)[:, None, None, None] * ones)
        parts.append(torch.cos(angle)[:, None, None, None] * ones)
        parts.append(self.coords.expand(batch, -1, -1, -1))
        return torch.cat(parts, dim=1)

    def regime_indices(self, lagged: list[Tensor]) -> list[Tensor]:
        """The design's regime indices, each [B, C, 1, 1] and bounded."""
        if self.regime_lag is None:
            return []
        now, before = lagged[0], lagged[self.regime_lag]
        indices = []
        if self.regime:  # tanh: a rollout that drifts cannot feed on itself
            indices.append(torch.tanh((now - before).abs().mean(dim=(2, 3), keepdim=True)))
        if self.persistence_regime:  # uncentred pattern correlation, in [-1, 1]
            dot = (now * before).sum(dim=(2, 3), keepdim=True)
            norms = (now.square().sum(dim=(2, 3), keepdim=True)) * (
                before.square().sum(dim=(2, 3), keepdim=True)
            )
            indices.append(dot / torch.sqrt(norms + 1e-6))
        return indices

    def regime_terms(self, lagged: list[Tensor], mean: Tensor | None) -> list[Tensor]:
        """The anomaly inputs times each regime index ``r`` [B, C, 1, 1], and ``r`` as a field."""
        inputs = _anomaly_inputs(lagged, mean)
        terms = []
        for r in self.regime_indices(lagged):
            terms += [part * r for part in inputs] + [r * torch.ones_like(lagged[0])]
        return terms

    def step(self, lagged: list[Tensor], mean: Tensor | None, hour: Tensor) -> Tensor:
        """The next anomaly [B, C, lat, lon]; ``lagged[j]`` is the anomaly ``lags[j]`` back."""
        f = self.features(lagged, mean, hour)
        extra = ([lagged[0]] if self.invariant else []) + self.regime_terms(lagged, mean)
        linear_in = torch.cat([f, *extra], dim=1) if extra else f
        y = lagged[0] + self.skip(_pad(linear_in, self.skip_kernel))
        if self.out is not None:
            h = f
            for conv in self.convs:
                h = functional.gelu(conv(_pad(h, self.kernel)))
            y = y + self.out(_pad(h, self.kernel))
        return y

    def forward(self, anomalies: Tensor, hour: Tensor) -> Tensor:
        """anomalies [B, history, C, lat, lon] oldest first, target hour [B] -> [B, C, ...]."""
        last = self.history - 1
        lagged = [anomalies[:, last - lag] for lag in self.lags]
        mean = anomalies[:, self.history - self.mean_window :].mean(1) if self.mean_window else None
        return self.step(lagged, mean, hour)


class RawFieldModel(nn.Module):
    """The exported model: raw fields [B, H, C, lat, lon] + target hour [B] -> next [B, C, ...].

    Normalisation: ``anomaly = (x - climatology[hour of x]) / scale[channel]``; the climatology
    [24, C, lat, lon] and the scale [C] are buffers, baked into the ONNX graph. ``damping``
    (see :attr:`schemas.train_config.ModelDesign.damping`) multiplies the core's next anomaly,
    after training: a shrinkage towards the climatology that compounds over a rollout (the
    anomaly at lead ``n`` steps is shrunk by about ``damping ** n``). At 1 the graph has no
    such operation.
    """

    def __init__(
        self,
        core: AnomalyCore,
        climatology: np.ndarray,
        scale: np.ndarray,
        damping: float = 1.0,
    ) -> None:
        super().__init__()
        self.core = core
        self.damping = float(damping)
        self.climatology: Tensor
        self.scale: Tensor
        self.offsets: Tensor
        self.register_buffer("climatology", torch.tensor(climatology, dtype=torch.float32))
        scale_t = torch.tensor(np.asarray(scale, dtype=np.float32)).reshape(1, 1, -1, 1, 1)
        self.register_buffer("scale", scale_t)
        offsets = torch.arange(core.history, dtype=torch.int64) - core.history
        self.register_buffer("offsets", offsets)

    def forward(self, fields: Tensor, hour: Tensor) -> Tensor:
        input_hours = torch.remainder(hour[:, None] + self.offsets[None, :], 24)
        anomalies = (fields - self.climatology[input_hours]) / self.scale
        y = self.core(anomalies, hour)
        if self.damping != 1.0:
            y = y * self.damping
        return y * self.scale[:, 0] + self.climatology[hour]
