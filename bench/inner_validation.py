"""Choose a model design by validation inside the training period, never the held-out week.

``python -m bench.inner_validation --variant "linear:design.layers=0" --variant
"cnn:design.layers=2;schedule.members=1"`` (after ``climate ingest --config configs/ingest.yaml``):
for every design variant (``configs/train.yaml`` with the variant's overrides) and every inner
fold, trains on the outer split's training period less one of its other whole weeks, scores
that week's initial times (their 24 h forecasts verify inside the week and the day after, and
their histories lie in the outer training period; the climatology is the inner training
times' only), and prints each fold's gate ratios (``RMSE / min(baselines)`` divided by
``1 - margin``: below 1 passes), how many folds each variant passes and its mean worst ratio.

``--outer`` names the outer held-out week (a ``bench.skill_splits`` split; default the shipped
one, 03-25 onwards), which is never read: run it once per week for a nested selection, each
week's design chosen inside its own training period. ``--damping`` scores every fold's fit
once per post-fit damping. A training that diverges fails its fold.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bench.skill_splits import SPAWN, SPLITS, add_training_arguments, damped_configs
from pipelines.skill_gate import DEFAULT_MARGINS
from schemas.config import load_config
from schemas.train_config import TrainConfig

SHIPPED_OUTER = "week 03-25..end"
FOLD_DAYS = 8  # a week of initial times and the day their last 24 h forecasts verify in
HISTORY_HOURS = 24  # the shipped design's history reaches 24 h back


def _iso(value: np.datetime64) -> str:
    return str(np.datetime_as_string(value, unit="s")) + "Z"


def _runs(times: np.ndarray, mask: np.ndarray) -> list[tuple[str, str]]:
    """Contiguous runs of ``mask`` as ``[start, end)`` ISO times (hourly ``times``)."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, stops = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    hour = np.timedelta64(1, "h")
    return [(_iso(times[a]), _iso(times[b - 1] + hour)) for a, b in zip(starts, stops, strict=True)]


def _in_week(times: np.ndarray, week: str, extra_days: int = 0) -> np.ndarray:
    start, end = SPLITS[week]
    inside = times >= np.datetime64(start.rstrip("Z"))
    if end is not None:
        inside &= times < np.datetime64(end.rstrip("Z")) + np.timedelta64(extra_days, "D")
    return inside


def folds(times: np.ndarray, outer: str) -> dict[str, list[str]]:
    """Inner folds of the outer split's training period: name -> split overrides.

    Each other week of ``SPLITS`` gives a block (the week and the day after, inside the outer
    training period); the fold trains on the outer training period less the block and scores
    the block's initial times whose 24 h verifying time is in the block and whose history is
    in the outer training period (or before the first field, where evaluation pads it).
    """
    train = ~_in_week(times, outer)
    out = {}
    for week in SPLITS:
        if week == outer:
            continue
        block = _in_week(times, week, extra_days=FOLD_DAYS - 7) & train
        index = np.arange(len(times))
        history_ok = np.array(
            [i < HISTORY_HOURS or train[i - HISTORY_HOURS : i + 1].all() for i in index]
        )
        verifies = np.zeros_like(block)
        verifies[:-HISTORY_HOURS] = block[HISTORY_HOURS:]
        scored = block & verifies & history_ok
        if not scored.any():
            continue
        (first, _), *_ = _runs(times, scored)
        last = _runs(times, scored)[-1][1]
        periods = ", ".join(f"{{start: {a}, end: {b}}}" for a, b in _runs(times, train & ~block))
        out[f"week {week.split()[1]} of {outer.split()[1]}'s training"] = [
            f"split.held_out.start={first}",
            f"split.held_out.end={last}",
            f"split.train=[{periods}]",
        ]
    return out


def run_fold(
    config_path: str,
    store: str,
    out: str,
    variant: str,
    fold: str,
    fold_overrides: list[str],
    dampings: list[float] | None,
) -> list[tuple[str, str, float, dict[int, float]]]:
    """Train one variant on one fold; per damping (variant, fold, worst ratio, ratios by lead)."""
    from pipelines.fields import load_fields, split_masks
    from pipelines.training.train import train_model, with_damping
    from pipelines.training_run import publish_model

    name, _, sets = variant.partition(":")
    overrides = [
        f"analysis.url={store}",
        f"output.dir={Path(out) / name / fold.split()[1]}",
        *fold_overrides,
        *[s for s in sets.split(";") if s],
    ]
    config = load_config(TrainConfig, config_path, overrides)
    fields = load_fields(store, config.analysis.variables, config.analysis.levels)
    train_mask, _ = split_masks(fields.times, config.split.held_out, config.split.train)
    configs = damped_configs(config, dampings)
    labels = [name if dampings is None else f"{name}@{c.design.damping:g}" for c in configs]
    try:
        trained = train_model(fields, train_mask, config.design, config.schedule, lambda _: None)
    except ValueError as exc:  # a diverged training fails its fold, not the comparison
        print(f"{name} on {fold}: {exc}", file=sys.stderr)
        failed = dict.fromkeys(DEFAULT_MARGINS, float("inf"))
        return [(label, fold, float("inf"), failed) for label in labels]
    results = []
    for label, damped in zip(labels, configs, strict=True):
        trained_d = with_damping(trained, damped.design.damping)
        scores = publish_model(damped, fields, trained_d).scores
        v = scores.values
        ratios = {}
        for lead, margin in DEFAULT_MARGINS.items():
            j = scores.lead_hours.index(lead)
            worst_channel = max(
                v[("rmse", "model")][c, j]
                / min(v[("rmse", "persistence")][c, j], v[("rmse", "climatology")][c, j])
                for c in range(len(scores.channel_names))
            )
            ratios[lead] = worst_channel / (1.0 - margin)
        results.append((label, fold, max(ratios.values()), ratios))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inner_validation", description=__doc__)
    add_training_arguments(parser, out="output/bench/inner_validation", jobs="folds")
    parser.add_argument(
        "--variant",
        action="append",
        required=True,
        metavar="NAME:K=V;K=V",
        help="a design variant: a name and config overrides (repeat the option)",
    )
    parser.add_argument("--outer", choices=sorted(SPLITS), default=SHIPPED_OUTER)
    args = parser.parse_args(argv)
    from pipelines.fields import load_fields

    config = load_config(TrainConfig, args.config, [f"analysis.url={args.store}"])
    times = load_fields(args.store, config.analysis.variables, config.analysis.levels).times
    inner = folds(times, args.outer)
    started = time.perf_counter()
    out = str(Path(args.out) / args.outer.split()[1])
    with ProcessPoolExecutor(max(1, args.jobs), mp_context=SPAWN) as pool:
        futures = [
            pool.submit(run_fold, args.config, args.store, out, variant, fold, sets, args.damping)
            for variant in args.variant
            for fold, sets in inner.items()
        ]
        results = [row for future in futures for row in future.result()]
    leads = list(DEFAULT_MARGINS)
    print(f"outer held-out week (never read): {args.outer}")
    print("| variant | fold | " + " | ".join(f"{h} h" for h in leads) + " | worst | verdict |")
    print("|---|---|" + "---:|" * (len(leads) + 1) + "---|")
    for name, fold, worst, ratios in results:
        cells = " | ".join(f"{ratios[h]:.3f}" for h in leads)
        verdict = "passes" if worst < 1 else "fails"
        print(f"| {name} | {fold} | {cells} | {worst:.3f} | {verdict} |")
    print("\nratio = RMSE / min(persistence, climatology) / (1 - margin); below 1 passes")
    ranking = []
    for name in dict.fromkeys(n for n, _, _, _ in results):
        mine = [worst for n, _, worst, _ in results if n == name]
        ranking.append((-sum(w < 1 for w in mine), sum(mine) / len(mine), name, len(mine)))
    for passed, mean, name, n in sorted(ranking):
        print(f"{name}: passes {-passed} of {n} folds, mean worst ratio {mean:.3f}")
    print(f"({time.perf_counter() - started:.0f} s, config {args.config})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
