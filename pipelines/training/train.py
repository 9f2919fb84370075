"""The seeded training loop: one-step pretraining, then the rollout loss (needs ``train``).

The rollout loss feeds the model its own outputs for ``rollout_steps`` steps and sums the
latitude-weighted MSE of every step, weighted by ``min(persistence, climatology MSE at that
step)^-power`` (normalised to mean 1): each lead counts in proportion to how hard its baseline
is to beat, which is what the promotion gate compares. With ``block_climatology_days`` every
window's anomalies come from a climatology that never saw the window's block, as a held-out
period's do, so the model learns how much of a departure from such a climatology persists.
With ``members`` > 1 the same fit runs once per seed (which only reorders the batches of a
zero-initialised stencil) and the model ships the mean of the members' parameters, which
scored better at 24 h than a single fit on the inner validation folds (see the README).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from pipelines.climatology import hour_of_day_climatology, lat_weights
from pipelines.fields import Fields
from pipelines.training.model import AnomalyCore, RawFieldModel
from pipelines.training.windows import (
    AnomalyWindows,
    anomalies,
    anomaly_scale,
    block_climatologies,
    window_starts,
)
from schemas.train_config import ModelDesign, Schedule

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """A trained model in raw units and what it was trained with."""

    model: RawFieldModel
    climatology: np.ndarray  # [24, C, lat, lon] of the training period
    scale: np.ndarray  # [C] anomaly standard deviations
    n_windows: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean loss of every epoch


class _Fitter:
    """Runs epochs over windows of the normalised anomaly series."""

    def __init__(
        self,
        core: AnomalyCore,
        windows: AnomalyWindows,
        hours: torch.Tensor,
        weights: torch.Tensor,
        schedule: Schedule,
        rng: np.random.Generator,
        report: Callable[[str], None],
    ) -> None:
        self.core, self.windows, self.hours, self.weights = core, windows, hours, weights
        self.schedule, self.rng, self.report = schedule, rng, report
        self.losses: list[float] = []

    def rollout_loss(
        self, starts: torch.Tensor, steps: int, lead_weights: torch.Tensor
    ) -> torch.Tensor:
        core, h, window = self.core, self.core.history, self.core.mean_window
        cut = self.windows.cut(starts.numpy(), h + steps)  # [B, H+K, C, ...]
        seq = torch.as_tensor(cut, device=self.weights.device)
        past = list(seq[:, :h].unbind(1))
        running = seq[:, h - window : h].sum(1) if window else None
        loss = torch.zeros((), device=seq.device)
        for k in range(steps):
            hour = self.hours[starts + h + k].to(self.weights.device)
            mean = running / window if running is not None else None
            y = core.step([past[-1 - lag] for lag in core.lags], mean, hour)
            loss = loss + lead_weights[k] * (self.weights * (y - seq[:, h + k]) ** 2).mean()
            if running is not None:
                running = running + y - past[-window]
            past = [*past[1:], y]
        return loss / steps

    def fit(self, starts: np.ndarray, steps: int, epochs: int, lead_weights: torch.Tensor) -> None:
        s = self.schedule
        n_batches = int(np.ceil(len(starts) / s.batch_size))
        optimiser = torch.optim.AdamW(
            self.core.parameters(), lr=s.learning_rate, weight_decay=s.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=s.learning_rate, total_steps=epochs * n_batches, pct_start=0.1
        )
        for epoch in range(epochs):
            order = self.rng.permutation(starts)
            total = 0.0
            for b in range(n_batches):
                batch = torch.as_tensor(order[b * s.batch_size : (b + 1) * s.batch_size])
                loss = self.rollout_loss(batch, steps, lead_weights)
                optimiser.zero_grad()
                if not torch.isfinite(loss):
                    raise ValueError(
                        f"training diverged (loss {loss.item()}) in epoch {epoch + 1} of the "
                        f"{steps}-step fit: lower schedule.learning_rate or set schedule.grad_clip"
                    )
                loss.backward()
                if s.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.core.parameters(), s.grad_clip)
                optimiser.step()
                scheduler.step()
                total += float(loss.item())
            self.losses.append(total / n_batches)
            self.report(f"K={steps} epoch {epoch + 1}/{epochs} loss {total / n_batches:.4f}")


def _lead_weights(
    seq: torch.Tensor, history: int, steps: int, weights: torch.Tensor, power: float
) -> torch.Tensor:
    """min(persistence MSE, climatology MSE)^-power per step of the training windows ``seq``."""
    last = seq[:, history - 1]
    persistence = torch.stack(
        [(weights * (seq[:, history + k] - last) ** 2).mean() for k in range(steps)]
    )
    climatology = torch.stack([(weights * seq[:, history + k] ** 2).mean() for k in range(steps)])
    lw = torch.minimum(persistence, climatology) ** (-power)
    return (lw / lw.mean()).to(torch.float32)


def _device(schedule: Schedule) -> torch.device:
    """The fit's device; a CUDA fit on a machine without one is refused before any work."""
    if schedule.device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"schedule.device is cuda but this torch ({torch.__version__}) sees no CUDA "
            "device: set schedule.device=cpu or install a CUDA build of torch"
        )
    return torch.device(schedule.device)


def _member_fitter(
    design: ModelDesign,
    schedule: Schedule,
    seed: int,
    fields: Fields,
    windows: AnomalyWindows,
    weights: torch.Tensor,
    report: Callable[[str], None],
) -> _Fitter:
    """A fresh core (seeded, built on the CPU, then moved to ``weights``' device) and the
    fitter that trains it on ``windows``."""
    torch.manual_seed(seed)
    core = AnomalyCore(design, len(fields.channel_names), fields.lat, fields.lon)
    core = core.to(weights.device)
    rng = np.random.default_rng(seed)
    return _Fitter(core, windows, torch.as_tensor(fields.hours), weights, schedule, rng, report)


def _averaged(cores: list[AnomalyCore]) -> AnomalyCore:
    """One core whose parameters are the members' mean. With a linear stencil (no CNN) the
    step is linear in its parameters, so this is the mean of the members' steps."""
    if len(cores) > 1:
        members = [dict(core.named_parameters()) for core in cores]
        with torch.no_grad():
            for name, parameter in members[0].items():
                parameter.copy_(torch.stack([member[name] for member in members]).mean(0))
    return cores[0]


def train_model(
    fields: Fields,
    train_mask: np.ndarray,
    design: ModelDesign,
    schedule: Schedule,
    report: Callable[[str], None] | None = None,
) -> TrainedModel:
    """Train the reference model on the times of ``train_mask``; seeded and reproducible.

    Parameters
    ----------
    fields
        The analysis channels (hourly, contiguous).
    train_mask
        Boolean [time]: the training period. The climatology, the anomaly scale and every
        training window come from it only.
    design, schedule
        The model and the training schedule (seed, epochs, rollout steps, ...).
    report
        Called with one progress line per epoch.

    Returns
    -------
    TrainedModel
        The model in eval mode, in raw units.

    Raises
    ------
    ValueError
        The training period is too short for one window of ``history + rollout_steps``.
    """
    report = report or log.info
    device = _device(schedule)
    started = time.perf_counter()
    torch.set_num_threads(schedule.threads)
    hours = fields.hours
    h, k = design.history, schedule.rollout_steps
    climatology = hour_of_day_climatology(fields.values, hours, train_mask)
    scale = anomaly_scale(anomalies(fields.values, hours, climatology), train_mask)
    whole = AnomalyWindows(fields.values, hours, climatology[None], np.zeros_like(hours), scale, h)
    windows = whole
    if schedule.block_climatology_days:
        tables, block = block_climatologies(
            fields.values, hours, train_mask, climatology, 24 * schedule.block_climatology_days
        )
        windows = AnomalyWindows(fields.values, hours, tables, block, scale, h)
    starts = window_starts(train_mask, h + k, schedule.stride)
    if not len(starts):
        raise ValueError(
            f"no training window of {h + k} consecutive hours (history {h} + rollout "
            f"{k}) lies inside the training period: lengthen split.train or shorten them"
        )
    weights = torch.as_tensor(lat_weights(fields.lat, len(fields.lon)), dtype=torch.float32)
    lead_weights = _lead_weights(
        torch.as_tensor(whole.cut(starts, h + k)), h, k, weights, schedule.lead_weight_power
    ).to(device)
    weights = weights.to(device)
    fitters = []
    for member in range(schedule.members):
        fitter = _member_fitter(
            design, schedule, schedule.seed + member, fields, windows, weights, report
        )
        if schedule.pre_epochs:
            fitter.fit(
                window_starts(train_mask, h + 1),
                1,
                schedule.pre_epochs,
                torch.ones(1, device=device),
            )
        fitter.fit(starts, k, schedule.epochs, lead_weights)
        fitters.append(fitter)
    core = _averaged([fitter.core.cpu() for fitter in fitters])
    model = RawFieldModel(core, climatology, scale, design.damping).eval()
    return TrainedModel(
        model=model,
        climatology=climatology,
        scale=scale,
        n_windows=len(starts),
        seconds=time.perf_counter() - started,
        losses=np.mean([fitter.losses for fitter in fitters], axis=0).tolist(),
    )


def with_damping(trained: TrainedModel, damping: float) -> TrainedModel:
    """The same fit with another ``design.damping`` (it acts after training only); the core's
    parameters are shared, not copied."""
    model = RawFieldModel(trained.model.core, trained.climatology, trained.scale, damping)
    return replace(trained, model=model.eval())
