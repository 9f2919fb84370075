"""``climate models``: list, show, register, promote and retire model versions.

Exit status: 0 done, 1 refused (the model, its card or the promotion gate), 2 configuration or
connection error. Every error is printed with its fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from jobs.common import setup_logging, typer_exit_codes
from pipelines.errors import ModelError

if TYPE_CHECKING:  # imported when a command runs: `climate --help` stays fast
    from pipelines.models.registry import ModelRecord, ModelRegistry
    from pipelines.skill_table import SkillRow, SkillTable


app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="The model registry: list, show, register, promote and retire model versions.",
)
out = Console(soft_wrap=True)

NameArg = Annotated[str, typer.Argument(help="model name, as in its card")]
VersionArg = Annotated[str, typer.Argument(help="model version, as in its card")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v")]


@dataclass(frozen=True)
class Context:
    """What every command works with, built from the environment's settings."""

    registry: ModelRegistry
    skill: SkillTable


def open_context() -> Context:
    """Settings -> migrated database -> registry at MODEL_REGISTRY_URL."""
    from pipelines.db import make_engine, migrate
    from pipelines.models.registry import ModelRegistry
    from pipelines.skill_table import SkillTable
    from schemas.settings import load_settings

    settings = load_settings()
    engine = make_engine(settings.database_url)
    migrate(engine)
    return Context(ModelRegistry.from_settings(engine, settings), SkillTable(engine))


def _run(verbose: bool, work: Callable[[Context], None]) -> None:
    setup_logging(verbose)
    with typer_exit_codes(ModelError):
        work(open_context())


def _when(value: object) -> str:
    return "" if value is None else str(value)[:19]


def _records_table(records: list[ModelRecord]) -> Table:
    table = Table(title="registered models")
    for column in ("name", "version", "status", "sha256", "registered", "promoted"):
        table.add_column(column, no_wrap=column in {"sha256", "registered", "promoted"})
    for r in records:
        table.add_row(
            r.name, r.version, r.status, r.sha256[:12], _when(r.registered_at), _when(r.promoted_at)
        )
    return table


def _card_table(record: ModelRecord) -> Table:
    card = record.card
    grid = card.inputs.grid
    table = Table(title=f"{card.name} {card.version}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows = [
        ("status", record.status),
        ("sha256", record.sha256),
        ("artefact", record.artefact_url),
        ("registered", _when(record.registered_at)),
        ("promoted", _when(record.promoted_at)),
        ("retired", _when(record.retired_at)),
        ("created", _when(card.created_at)),
        ("channels", ", ".join(card.channel_names)),
        ("history", f"{card.inputs.history} field(s)"),
        ("time step", f"{card.inputs.time_step_hours} h"),
        (
            "max lead",
            "no limit" if card.inputs.max_lead_hours is None else f"{card.inputs.max_lead_hours} h",
        ),
        (
            "grid",
            f"{len(grid.lat)}x{len(grid.lon)} lat {grid.lat[0]:g}..{grid.lat[-1]:g} "
            f"lon {grid.lon[0]:g}..{grid.lon[-1]:g}",
        ),
        ("tensors", f"{card.tensors.fields}, {card.tensors.hour} -> {card.tensors.output}"),
        ("training", str(card.training)),
        ("normalisation", str(card.normalisation)),
        ("code version", card.code_version),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _scores_table(run_id: str, rows: list[SkillRow]) -> Table:
    start = min(r.period_start for r in rows)
    end = max(r.period_end for r in rows)
    table = Table(title=f"evaluation that counts: run {run_id}, {_when(start)} .. {_when(end)}")
    for column in ("variable", "lead h", "metric", "model", "persistence", "climatology", "inits"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.variable,
            str(r.lead_hours),
            r.metric,
            _number(r.model_value),
            _number(r.persistence_value),
            _number(r.climatology_value),
            str(r.n_inits),
        )
    return table


@app.command("list")
def list_command(
    name: Annotated[str | None, typer.Option("--name", help="only this model")] = None,
    verbose: VerboseOption = False,
) -> None:
    """List registered model versions."""

    def work(ctx: Context) -> None:
        records = ctx.registry.list(name)
        if not records:
            out.print("no models registered; add one with `climate models register PATH.onnx`")
            return
        out.print(_records_table(records))

    _run(verbose, work)


@app.command("show")
def show_command(
    name: NameArg,
    version: Annotated[
        str | None, typer.Argument(help="default: the promoted version, else the newest")
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Show a version's card, the skill scores that count and the promotion gate's verdict."""

    def work(ctx: Context) -> None:
        if version is not None:
            record = ctx.registry.get(name, version)
        else:
            record = ctx.registry.promoted(name) or _newest(ctx.registry, name)
        out.print(_card_table(record))
        from pipelines.skill_gate import promotion_verdict

        verdict = promotion_verdict(ctx.skill, record.card)
        if verdict.run is not None and verdict.rows:
            out.print(_scores_table(verdict.run.run_id, verdict.rows))
        if verdict.problems:
            out.print("promotion gate: [red]fails[/red]")
            for problem in verdict.problems:
                out.print(f"  - {problem}", markup=False, highlight=False)
        else:
            out.print("promotion gate: [green]passes[/green]")

    _run(verbose, work)


def _newest(registry: ModelRegistry, name: str) -> ModelRecord:
    records = registry.list(name)
    if not records:
        raise ModelError(
            f"no model named {name} is registered; see `climate models list`, or register one "
            "with `climate models register PATH.onnx`"
        )
    return records[-1]


@app.command("register")
def register_command(
    onnx_path: Annotated[Path, typer.Argument(help="the ONNX file")],
    card: Annotated[
        Path | None, typer.Option("--card", help="its card; default: beside it, *.card.json")
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Verify a model against its card, store it and register it as a candidate."""

    def work(ctx: Context) -> None:
        record = ctx.registry.register(onnx_path, card)
        out.print(
            f"registered {record.name} {record.version} ({record.status}) sha256 "
            f"{record.sha256} at {record.artefact_url}",
            markup=False,
            highlight=False,
        )

    _run(verbose, work)


@app.command("promote")
def promote_command(name: NameArg, version: VersionArg, verbose: VerboseOption = False) -> None:
    """Promote a version, if its latest succeeded held-out evaluation passes the skill gate."""

    def work(ctx: Context) -> None:
        before = ctx.registry.promoted(name)
        record = ctx.registry.promote(name, version)  # the registry applies the skill gate
        demoted = (
            f"; {name} {before.version} is a candidate again"
            if before and before.version != version
            else ""
        )
        out.print(f"promoted {name} {record.version}{demoted}", markup=False, highlight=False)

    _run(verbose, work)


@app.command("retire")
def retire_command(
    name: NameArg,
    version: VersionArg,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="retire even the promoted version; the model then has no promoted version",
        ),
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    """Retire a version: it can no longer be promoted; its files stay for traceability."""

    def work(ctx: Context) -> None:
        was = ctx.registry.get(name, version).status
        record = ctx.registry.retire(name, version, force=force)
        note = f"; {name} has no promoted version now" if was == "promoted" else ""
        out.print(f"retired {name} {record.version}{note}", markup=False, highlight=False)

    _run(verbose, work)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
