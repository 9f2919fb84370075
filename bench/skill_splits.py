"""Train and evaluate the reference model on each held-out week of the sample; is the bar met?

``python -m bench.skill_splits`` (after ``climate ingest --config configs/ingest.yaml``): for
each split, trains ``configs/train.yaml``'s design on every other time of the month, scores
the held-out week's initial times at leads 1..24 h against persistence and the training
climatology, and prints the table and the promotion gate's verdict (RMSE at least 10% below
the better baseline at 1, 3 and 6 h, below it at 12 and 24 h). Splits run in parallel
processes (``--jobs``), one torch thread each.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pipelines.skill_gate import gate_problems
from schemas.config import load_config
from schemas.train_config import TrainConfig

SPLITS = {  # name: (start, end) of the held-out initial times; None = end of the store
    "week 03-01..03-08": ("2019-03-01T00:00:00Z", "2019-03-08T00:00:00Z"),
    "week 03-08..03-15": ("2019-03-08T00:00:00Z", "2019-03-15T00:00:00Z"),
    "week 03-15..03-22": ("2019-03-15T00:00:00Z", "2019-03-22T00:00:00Z"),
    "week 03-25..end": ("2019-03-25T00:00:00Z", None),
}


def run_split(config_path: str, store: str, out_dir: str, name: str, extra: list[str]) -> str:
    """Train and score one split; returns its printable table and verdict."""
    from pipelines.evaluate.scoring import skill_rows
    from pipelines.training.fields import load_fields
    from pipelines.training.runner import run_training

    start, end = SPLITS[name]
    overrides = [
        f"analysis.url={store}",
        f"split.held_out.start={start}",
        f"split.held_out.end={end or 'null'}",
        "split.train=null",
        f"output.dir={Path(out_dir) / name.split()[1]}",
        *extra,
    ]
    config = load_config(TrainConfig, config_path, overrides)
    fields = load_fields(store, config.analysis.variables, config.analysis.levels)
    result = run_training(config, fields, report=lambda _: None)
    scores = result.scores
    v = scores.values
    lines = [
        f"## held out: {name} (initial times {scores.period_start:%Y-%m-%dT%H} .. "
        f"{scores.period_end:%Y-%m-%dT%H}), trained on the rest of the month in "
        f"{result.trained.seconds:.0f} s, max |ONNX - torch| {result.max_onnx_difference:.1e} K",
        "",
        "| lead h | inits | model | persistence | climatology | model / min(baselines) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for c, channel in enumerate(scores.channel_names):
        for j, lead in enumerate(scores.lead_hours):
            m, p, k = (v[("rmse", s)][c, j] for s in ("model", "persistence", "climatology"))
            lines.append(
                f"| {lead} | {scores.n_inits[j]} | {m:.3f} | {p:.3f} | {k:.3f} | "
                f"{m / min(p, k):.3f} |" + ("" if len(scores.channel_names) == 1 else f" {channel}")
            )
    problems = gate_problems(skill_rows(scores), list(scores.channel_names))
    lines += ["", "bar: " + ("HOLDS" if not problems else "FAILS")]
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)


def add_training_arguments(parser: argparse.ArgumentParser, out: str, jobs: str) -> None:
    """The options every training bench takes: config, store, output folder, parallel jobs."""
    parser.add_argument("--config", default="configs/train.yaml")
    parser.add_argument("--store", default="output/analysis.zarr")
    parser.add_argument("--out", default=out)
    parser.add_argument("--jobs", type=int, default=2, help=f"{jobs} trained at once")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.skill_splits", description=__doc__)
    add_training_arguments(parser, out="output/bench/skill_splits", jobs="splits")
    parser.add_argument("--only", action="append", choices=sorted(SPLITS), help="these splits")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    args = parser.parse_args(argv)
    names = args.only or list(SPLITS)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [
            pool.submit(run_split, args.config, args.store, args.out, n, args.overrides)
            for n in names
        ]
        reports = [future.result() for future in futures]
    held = sum("bar: HOLDS" in report for report in reports)
    print("\n\n".join(reports))
    print(
        f"\nbar holds on {held} of {len(reports)} held-out weeks "
        f"({time.perf_counter() - started:.0f} s, config {args.config})"
    )
    return 0 if held == len(reports) else 1


if __name__ == "__main__":
    sys.exit(main())
