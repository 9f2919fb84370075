"""The ``climate`` command: one subcommand per job."""

from __future__ import annotations

from typing import Annotated

import typer

from jobs.keys import app as keys_app
from jobs.models import app as models_app
from jobs.submission import app as jobs_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(models_app, name="models")
app.add_typer(jobs_app, name="jobs")
app.add_typer(keys_app, name="keys")

ConfigOption = Annotated[str, typer.Option("--config", "-c", help="YAML config file")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="dotted override KEY=VALUE, e.g. store.chunks.time=24"),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v")]


@app.callback()
def _root() -> None:
    """Climate: ingest, train, evaluate, forecast and serve gridded weather data on Ray."""


@app.command("ingest")
def ingest_command(
    config: ConfigOption = "configs/ingest.yaml",
    overrides: SetOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Ingest GRIB, NetCDF or Zarr into the canonical analysis Zarr store."""
    from jobs.ingest import ingest

    raise typer.Exit(ingest(config, overrides or [], verbose))


@app.command("predict")
def predict_command(
    config: ConfigOption = "configs/forecast.yaml",
    overrides: SetOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Roll a model out from the analysis store into a forecast store and the forecasts table."""
    from jobs.forecast import predict

    raise typer.Exit(predict(config, overrides or [], verbose))


@app.command("train")
def train_command(
    config: ConfigOption = "configs/train.yaml",
    overrides: SetOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Train the reference model; export ONNX and its model card (needs the train extra)."""
    from jobs.train import train

    raise typer.Exit(train(config, overrides or [], verbose))


@app.command("evaluate")
def evaluate_command(
    config: ConfigOption = "configs/evaluate.yaml",
    overrides: SetOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Score a model against persistence and climatology: skill table and report."""
    from jobs.evaluate import evaluate

    raise typer.Exit(evaluate(config, overrides or [], verbose))


@app.command("submit")
def submit_command(
    kind: Annotated[str, typer.Argument(help="ingest | train | predict | evaluate | nightly")],
    config: Annotated[str, typer.Option("--config", "-c", help="YAML config file")],
    overrides: SetOption = None,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray job API; default RAY_ADDRESS or 127.0.0.1:8265"),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="follow the job to its end; exit 0 if it succeeded")
    ] = False,
    cpus: Annotated[
        float | None, typer.Option("--cpus", help="entrypoint CPUs; default from the config")
    ] = None,
    gpus: Annotated[
        float | None, typer.Option("--gpus", help="entrypoint GPUs; default from the config")
    ] = None,
    pass_env: Annotated[
        bool,
        typer.Option(
            "--pass-env",
            help="send DATABASE_URL, MODEL_REGISTRY_URL, S3_ENDPOINT_URL, REDIS_URL to the job "
            "(secrets then travel in its runtime env)",
        ),
    ] = False,
) -> None:
    """Submit a job to a Ray cluster (Ray Job Submission API), this directory as working_dir."""
    from jobs.submission import submit

    raise typer.Exit(
        submit(kind, config, overrides or [], address, wait, cpus, gpus, pass_env=pass_env)
    )


@app.command("schedule")
def schedule_command(
    config: ConfigOption = "configs/nightly.yaml",
    once: Annotated[
        bool, typer.Option("--once", help="run the most recent due time (unless it ran) and exit")
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    """Run the nightly job on the cron of the config's schedule: section, one run at a time."""
    from jobs.schedule import schedule

    raise typer.Exit(schedule(config, once, verbose))


@app.command("watch")
def watch_command(
    config: ConfigOption = "configs/watch.yaml",
    overrides: SetOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Follow a prefix: ingest and forecast each new initial time once, as its files complete."""
    from jobs.watch import watch

    raise typer.Exit(watch(config, overrides or [], verbose))


@app.command("backup")
def backup_command(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            envvar="CLIMATE_BACKUP_URL",
            help="where backups go: a path or s3://bucket/prefix (env CLIMATE_BACKUP_URL)",
        ),
    ],
    keep: Annotated[
        int, typer.Option("--keep", min=1, help="how many complete backups to keep")
    ] = 7,
    verbose: VerboseOption = False,
) -> None:
    """Back up the database and the registry's objects to URL/<UTC timestamp>/ (checksummed)."""
    from jobs.backup import backup

    raise typer.Exit(backup(to, keep, verbose))


@app.command("restore")
def restore_command(
    source: Annotated[
        str,
        typer.Option(
            "--from",
            envvar="CLIMATE_BACKUP_URL",
            help="where backups are: a path or s3://bucket/prefix (env CLIMATE_BACKUP_URL)",
        ),
    ],
    backup: Annotated[
        str, typer.Option("--backup", help="a backup's timestamp, or latest")
    ] = "latest",
    force: Annotated[
        bool, typer.Option("--force", help="replace a database that holds rows")
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    """Restore a backup after checking every checksum; refuses a non-empty database."""
    from jobs.backup import restore

    raise typer.Exit(restore(source, backup, force, verbose))


@app.command("serve")
def serve_command(
    config: ConfigOption = "configs/serve.yaml",
    host: Annotated[str | None, typer.Option("--host", help="overrides http_options.host")] = None,
    port: Annotated[int | None, typer.Option("--port", help="overrides http_options.port")] = None,
    offline: Annotated[
        str | None,
        typer.Option(
            "--offline",
            metavar="DIR",
            help="serve from a directory of `climate sync --to DIR` alone: no database, "
            "Redis or object store is contacted",
        ),
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Serve forecasts and predictions over HTTP (Ray Serve) until SIGTERM or Ctrl-C."""
    from jobs.serve import serve_forever

    raise typer.Exit(serve_forever(config, host, port, verbose, offline))


@app.command("sync")
def sync_command(
    to: Annotated[
        str, typer.Option("--to", metavar="DIR", help="the directory to write (a symlink)")
    ],
    config: ConfigOption = "configs/serve.yaml",
    model: Annotated[
        str | None,
        typer.Option("--model", help="NAME or NAME:VERSION; default: the config's model"),
    ] = None,
    forecast_store: Annotated[
        str | None,
        typer.Option("--forecast-store", help="default: the config's forecast_store"),
    ] = None,
    keys: Annotated[
        bool, typer.Option("--keys/--no-keys", help="copy the API-key hashes (not revoked)")
    ] = True,
    verbose: VerboseOption = False,
) -> None:
    """Copy the promoted model and the latest forecast run into DIR for `serve --offline`."""
    from jobs.sync import sync

    raise typer.Exit(sync(to, config, model, forecast_store, keys, verbose))


def main() -> None:
    app()
