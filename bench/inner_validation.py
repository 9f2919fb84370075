"""Choose a model design by validation inside the training period, never the held-out week.

``python -m bench.inner_validation --variant "linear:design.layers=0" --variant
"cnn:design.layers=2;schedule.members=1"`` (after ``climate ingest --config configs/ingest.yaml``):
for every design variant (``configs/train.yaml`` with the variant's overrides) and every inner
fold, trains on the shipped split's training period (2019-03-01..03-25) less one of its three whole
weeks, scores that week's initial times (their 24 h forecasts verify before the next training time;
the climatology is the inner training times' only), and prints each fold's gate ratios (``RMSE /
min(baselines)`` divided by ``1 - margin``: below 1 passes), how many folds each variant passes and
its mean worst ratio. The shipped held-out week (03-25 onwards) is never read. A training that
diverges fails its fold.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

from bench.skill_splits import add_training_arguments
from pipelines.skill_gate import DEFAULT_MARGINS
from schemas.config import load_config
from schemas.train_config import TrainConfig

# The shipped split's training period, and the folds cut from it: name -> validation block
# [start, end), a whole week plus the day its last 24 h forecasts verify in. The shipped
# held-out week (03-25 onwards) is never touched.
MAIN_TRAINING = ("2019-03-01T00:00:00Z", "2019-03-25T00:00:00Z")
FOLDS = {
    "week 03-01 of 03-25's training": ("2019-03-01T00:00:00Z", "2019-03-09T00:00:00Z"),
    "week 03-08 of 03-25's training": ("2019-03-08T00:00:00Z", "2019-03-16T00:00:00Z"),
    "week 03-15 of 03-25's training": ("2019-03-15T00:00:00Z", "2019-03-23T00:00:00Z"),
}


def _fold_overrides(fold: str) -> list[str]:
    """Held out: the block's initial times whose 24 h lead stays in the block; trained on the
    main training period less the whole block."""
    start, stop = FOLDS[fold]
    last_init = (datetime.fromisoformat(stop) - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    first, end = MAIN_TRAINING
    train = [f"{{start: {a}, end: {b}}}" for a, b in ((first, start), (stop, end)) if a < b]
    return [
        f"split.held_out.start={start}",
        f"split.held_out.end={last_init}",
        f"split.train=[{', '.join(train)}]",
    ]


def run_fold(
    config_path: str, store: str, out: str, variant: str, fold: str
) -> tuple[str, str, float, dict[int, float]]:
    """Train one variant on one fold; returns (variant, fold, worst ratio, ratios by lead)."""
    from pipelines.training.fields import load_fields
    from pipelines.training.runner import run_training

    name, _, sets = variant.partition(":")
    overrides = [
        f"analysis.url={store}",
        f"output.dir={Path(out) / name / str(list(FOLDS).index(fold))}",
        *_fold_overrides(fold),
        *[s for s in sets.split(";") if s],
    ]
    config = load_config(TrainConfig, config_path, overrides)
    fields = load_fields(store, config.analysis.variables, config.analysis.levels)
    try:
        scores = run_training(config, fields, report=lambda _: None).scores
    except ValueError as exc:  # a diverged training fails its fold, not the comparison
        print(f"{name} on {fold}: {exc}", file=sys.stderr)
        return name, fold, float("inf"), dict.fromkeys(DEFAULT_MARGINS, float("inf"))
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
    return name, fold, max(ratios.values()), ratios


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
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [
            pool.submit(run_fold, args.config, args.store, args.out, variant, fold)
            for variant in args.variant
            for fold in FOLDS
        ]
        results = [future.result() for future in futures]
    leads = list(DEFAULT_MARGINS)
    print("| variant | fold | " + " | ".join(f"{h} h" for h in leads) + " | worst | verdict |")
    print("|---|---|" + "---:|" * (len(leads) + 1) + "---|")
    for name, fold, worst, ratios in results:
        cells = " | ".join(f"{ratios[h]:.3f}" for h in leads)
        verdict = "passes" if worst < 1 else "fails"
        print(f"| {name} | {fold} | {cells} | {worst:.3f} | {verdict} |")
    print("\nratio = RMSE / min(persistence, climatology) / (1 - margin); below 1 passes")
    for variant in args.variant:
        name = variant.partition(":")[0]
        mine = [worst for n, _, worst, _ in results if n == name]
        passed = sum(worst < 1 for worst in mine)
        print(
            f"{name}: passes {passed} of {len(mine)} folds, mean worst ratio "
            f"{sum(mine) / len(mine):.3f}"
        )
    print(f"({time.perf_counter() - started:.0f} s, config {args.config})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
