"""The evaluation report: Markdown tables and PNG plots, readable without Python."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pipelines.evaluate.scoring import SOURCES, Scores

_STYLE = {"model": "C0-o", "persistence": "C1--s", "climatology": "C2:^"}
_UNITS_NOTE = "RMSE, bias and MAE in the variable's units; ACC vs the training climatology"


def _fmt(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.3f}"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def plot_skill(scores: Scores, channel: int, path: Path) -> None:
    """RMSE and ACC vs lead time for the model and both baselines."""
    leads = np.asarray(scores.lead_hours)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, metric in zip(axes, ("rmse", "acc"), strict=True):
        for source in SOURCES:
            values = scores.values[(metric, source)][channel]
            if np.isfinite(values).any():
                ax.plot(leads, values, _STYLE[source], label=source, markersize=3)
        ax.set_xlabel("lead time (h)")
        ax.set_ylabel(metric.upper() + (" (lat-weighted)" if metric == "rmse" else ""))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{scores.channel_names[channel]}: skill vs lead time")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_maps(scores: Scores, channel: int, leads: Sequence[int], path: Path) -> None:
    """The model's RMSE and mean error per grid point at ``leads`` (rows: RMSE, bias)."""
    picks = [scores.lead_hours.index(lead) for lead in leads if lead in scores.lead_hours]
    if not picks:
        picks = [0, len(scores.lead_hours) - 1]
    extent = (
        float(scores.lon[0]), float(scores.lon[-1]), float(scores.lat[-1]), float(scores.lat[0])
    )  # fmt: skip
    fig, axes = plt.subplots(
        2, len(picks), figsize=(3.6 * len(picks), 6), squeeze=False, constrained_layout=True
    )
    for col, j in enumerate(picks):
        lead = scores.lead_hours[j]
        rmse_top = float(np.nanmax(scores.rmse_maps[channel, j]))
        bias_top = float(np.nanmax(np.abs(scores.bias_maps[channel, j]))) or 1.0
        image = axes[0, col].imshow(
            scores.rmse_maps[channel, j], extent=extent, cmap="viridis", vmin=0, vmax=rmse_top
        )
        axes[0, col].set_title(f"RMSE, lead {lead} h")
        fig.colorbar(image, ax=axes[0, col], shrink=0.8)
        image = axes[1, col].imshow(
            scores.bias_maps[channel, j], extent=extent, cmap="RdBu_r", vmin=-bias_top,
            vmax=bias_top,
        )  # fmt: skip
        axes[1, col].set_title(f"mean error, lead {lead} h")
        fig.colorbar(image, ax=axes[1, col], shrink=0.8)
    for ax in axes.ravel():
        ax.set_xlabel("lon")
        ax.set_ylabel("lat")
    fig.suptitle(f"{scores.channel_names[channel]}: model error per grid point")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _table(scores: Scores, channel: int) -> list[str]:
    lines = [
        "| lead (h) | inits | RMSE model | RMSE persistence | RMSE climatology | model / best "
        "| bias model | MAE model | ACC model | ACC persistence |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    v = scores.values
    for j, lead in enumerate(scores.lead_hours):
        model = v[("rmse", "model")][channel, j]
        best = min(v[("rmse", "persistence")][channel, j], v[("rmse", "climatology")][channel, j])
        lines.append(
            f"| {lead} | {scores.n_inits[j]} | {_fmt(model)} | "
            f"{_fmt(v[('rmse', 'persistence')][channel, j])} | "
            f"{_fmt(v[('rmse', 'climatology')][channel, j])} | {_fmt(model / best)} | "
            f"{_fmt(v[('bias', 'model')][channel, j])} | {_fmt(v[('mae', 'model')][channel, j])} | "
            f"{_fmt(v[('acc', 'model')][channel, j])} | "
            f"{_fmt(v[('acc', 'persistence')][channel, j])} |"
        )
    return lines


def write_report(
    scores: Scores,
    directory: str | Path,
    title: str,
    gate: Sequence[str],
    map_leads: Sequence[int] = (1, 6, 24),
    notes: Sequence[str] = (),
) -> Path:
    """Write ``report.md`` and one skill plot and one error-map plot per channel.

    Parameters
    ----------
    scores
        The evaluation.
    directory
        Created if needed; existing files of the same names are replaced.
    title
        The report's heading (model name and version).
    gate
        The promotion gate's problems; empty when the model passes.
    map_leads
        Lead times of the error maps.
    notes
        Extra lines under the heading (run id, data, periods).

    Returns
    -------
    pathlib.Path
        The Markdown file.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    lines += [f"- {note}" for note in notes]
    lines += [
        f"- initial times {scores.period_start:%Y-%m-%dT%H:%MZ} .. "
        f"{scores.period_end:%Y-%m-%dT%H:%MZ}; a lead is scored where its verifying time exists",
        f"- {_UNITS_NOTE}; RMSE weighted by cos(latitude) normalised to mean 1",
        "",
        "## Promotion gate",
        "",
    ]
    lines += ["passes"] if not gate else ["fails:", ""] + [f"- {p}" for p in gate]
    for c, name in enumerate(scores.channel_names):
        skill_png, maps_png = f"skill_{_safe(name)}.png", f"error_maps_{_safe(name)}.png"
        plot_skill(scores, c, out / skill_png)
        plot_maps(scores, c, map_leads, out / maps_png)
        lines += ["", f"## {name}", "", *_table(scores, c), ""]
        lines += [f"![{name} skill vs lead time]({skill_png})", ""]
        lines += [f"![{name} error maps]({maps_png})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
