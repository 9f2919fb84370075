"""Train and evaluate the reference model on each held-out week of the sample; is the bar met?

``python -m bench.skill_splits`` (after ``climate ingest --config configs/ingest.yaml``): for
each split, trains ``configs/train.yaml``'s design on every other time of the month, scores
the held-out week's initial times at leads 1..24 h against persistence and the training
climatology, and prints the table and the promotion gate's verdict (RMSE at least 10% below
the better baseline at 1, 3 and 6 h, below it at 12 and 24 h). Splits run in parallel
processes (``--jobs``), one torch thread each. ``--damping 1,0.99`` scores each fit once per
post-fit damping (``design.damping``, which acts after training) without training again.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.skill_gate import DEFAULT_MARGINS, gate_problems
from schemas.config import load_config
from schemas.train_config import TrainConfig

# zarr's I/O thread in a parent that read the store would hang forked children
SPAWN = multiprocessing.get_context("spawn")

if TYPE_CHECKING:
    from pipelines.training_run import TrainingResult

SPLITS = {  # name: (start, end) of the held-out initial times; None = end of the store
    "week 03-01..03-08": ("2019-03-01T00:00:00Z", "2019-03-08T00:00:00Z"),
    "week 03-08..03-15": ("2019-03-08T00:00:00Z", "2019-03-15T00:00:00Z"),
    "week 03-15..03-22": ("2019-03-15T00:00:00Z", "2019-03-22T00:00:00Z"),
    "week 03-25..end": ("2019-03-25T00:00:00Z", None),
}


def split_overrides(name: str) -> list[str]:
    """Config overrides that hold out split ``name`` and train on the rest of the store."""
    start, end = SPLITS[name]
    return [
        f"split.held_out.start={start}",
        f"split.held_out.end={end or 'null'}",
        "split.train=null",
    ]


def damped_configs(config: TrainConfig, dampings: list[float] | None) -> list[TrainConfig]:
    """One config per post-fit damping (the config's own when ``dampings`` is None), each
    writing to its own folder when there are several."""
    if dampings is None:
        return [config]
    out = Path(config.output.dir)
    return [
        config.model_copy(
            update={
                "design": config.design.model_copy(update={"damping": d}),
                "output": config.output.model_copy(update={"dir": str(out / f"damping-{d:g}")}),
            }
        )
        for d in dampings
    ]


def run_split(
    config_path: str,
    store: str,
    out_dir: str,
    name: str,
    extra: list[str],
    dampings: list[float] | None = None,
) -> list[tuple[float, str, float]]:
    """Train one split once; per damping, its printable table, verdict and worst gate ratio."""
    from pipelines.fields import load_fields, split_masks
    from pipelines.training.train import train_model, with_damping
    from pipelines.training_run import publish_model

    overrides = [
        f"analysis.url={store}",
        f"output.dir={Path(out_dir) / name.split()[1]}",
        *split_overrides(name),
        *extra,
    ]
    config = load_config(TrainConfig, config_path, overrides)
    fields = load_fields(store, config.analysis.variables, config.analysis.levels)
    train_mask, _ = split_masks(fields.times, config.split.held_out, config.split.train)
    trained = train_model(fields, train_mask, config.design, config.schedule, lambda _: None)
    reports = []
    for damped in damped_configs(config, dampings):
        damping = damped.design.damping
        result = publish_model(damped, fields, with_damping(trained, damping))
        title = f"{name}, damping {damping:g}" if dampings else name
        reports.append((damping, *_report(title, result)))
    return reports


def _report(title: str, result: TrainingResult) -> tuple[str, float]:
    """The skill table of one scored model, its gate verdict and its worst gate ratio
    (``RMSE / min(baselines) / (1 - margin)`` over the gated leads: below 1 passes)."""
    from pipelines.evaluate.scoring import skill_rows

    scores = result.scores
    v = scores.values
    lines = [
        f"## held out: {title} (initial times {scores.period_start:%Y-%m-%dT%H} .. "
        f"{scores.period_end:%Y-%m-%dT%H}), trained on the rest of the month in "
        f"{result.trained.seconds:.0f} s, max |ONNX - torch| {result.max_onnx_difference:.1e} K",
        "",
        "| lead h | inits | model | persistence | climatology | model / min(baselines) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    worst = 0.0
    for c, channel in enumerate(scores.channel_names):
        for j, lead in enumerate(scores.lead_hours):
            m, p, k = (v[("rmse", s)][c, j] for s in ("model", "persistence", "climatology"))
            lines.append(
                f"| {lead} | {scores.n_inits[j]} | {m:.3f} | {p:.3f} | {k:.3f} | "
                f"{m / min(p, k):.3f} |" + ("" if len(scores.channel_names) == 1 else f" {channel}")
            )
            if lead in DEFAULT_MARGINS:
                worst = max(worst, m / min(p, k) / (1.0 - DEFAULT_MARGINS[lead]))
    problems = gate_problems(skill_rows(scores), list(scores.channel_names))
    lines += ["", "bar: " + ("HOLDS" if not problems else "FAILS")]
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines), worst


def add_training_arguments(parser: argparse.ArgumentParser, out: str, jobs: str) -> None:
    """The options every training bench takes: config, store, output folder, parallel jobs,
    post-fit dampings."""
    parser.add_argument("--config", default="configs/train.yaml")
    parser.add_argument("--store", default="output/analysis.zarr")
    parser.add_argument("--out", default=out)
    parser.add_argument("--jobs", type=int, default=2, help=f"{jobs} trained at once")
    parser.add_argument(
        "--damping",
        type=_dampings,
        default=None,
        metavar="D,D,...",
        help="score every fit with each of these design.damping values (it acts after "
        "training, so nothing is trained again); default: the config's",
    )


def _dampings(text: str) -> list[float]:
    values = [float(part) for part in text.split(",") if part.strip()]
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give dampings in (0, 1], e.g. 1,0.99")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.skill_splits", description=__doc__)
    add_training_arguments(parser, out="output/bench/skill_splits", jobs="splits")
    parser.add_argument("--only", action="append", choices=sorted(SPLITS), help="these splits")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    args = parser.parse_args(argv)
    names = args.only or list(SPLITS)
    started = time.perf_counter()
    with ProcessPoolExecutor(max(1, args.jobs), mp_context=SPAWN) as pool:
        futures = [
            pool.submit(
                run_split, args.config, args.store, args.out, n, args.overrides, args.damping
            )
            for n in names
        ]
        reports = {name: future.result() for name, future in zip(names, futures, strict=True)}
    print("\n\n".join(text for split in reports.values() for _, text, _ in split))
    seconds = time.perf_counter() - started
    print(f"\nworst gate ratio per held-out week (below 1 holds; {seconds:.0f} s, {args.config})")
    print("| damping | " + " | ".join(names) + " | bar holds |")
    print("|---:|" + "---:|" * len(names) + "---|")
    every = True
    for i, damping in enumerate(d for d, _, _ in reports[names[0]]):
        worst = [reports[name][i][2] for name in names]
        held = sum(w < 1 for w in worst)
        every &= held == len(names)
        cells = " | ".join(f"{w:.3f}" for w in worst)
        print(f"| {damping:g} | {cells} | {held} of {len(names)} |")
    return 0 if every else 1


if __name__ == "__main__":
    sys.exit(main())
