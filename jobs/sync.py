"""``climate sync --to DIR``: copy what the online application serves into a directory, for
``climate serve --offline DIR`` on a machine that reaches no database, Redis or object store.

The model (the registry's promoted version of the config's model, or ``--model``), the
forecast store's latest committed run (the config's ``forecast_store``, or
``--forecast-store``) and the hashes of the API keys not revoked (unless ``--no-keys``) are read
with ``DATABASE_URL``, ``MODEL_REGISTRY_URL`` and the S3 settings of the environment, as
``climate serve`` reads them (:func:`pipelines.sync.sync_to`). Running it again when nothing
changed copies nothing.

Exit status: 0 synced or already up to date; 1 refused (no promoted model, no committed run,
a model file that does not match its card); 2 bad input (config, ``--model``, ``DIR``) or a
store or database that cannot be reached (the message names it).
"""

from __future__ import annotations

from rich.markup import escape

from jobs.common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_REFUSED,
    BarProgress,
    console,
    read_config,
    setup_logging,
)
from pipelines.errors import ClimateError, ConfigError, ModelError
from schemas.model_source import ModelFile, RegistryModel
from schemas.serve_config import ServeArgs, ServeFile
from schemas.settings import load_settings


def model_source(text: str) -> ModelFile | RegistryModel:
    """``NAME``, ``NAME:VERSION`` or ``path.onnx`` (as ``model=`` of ``serve run``).

    Raises
    ------
    ConfigError
        Not one of those forms.
    """
    try:
        args = ServeArgs.model_validate({"forecast_store": "-", "model": text.strip()})
    except ValueError as exc:
        raise ConfigError(
            f"--model {text!r}: give NAME, NAME:VERSION or a path to an .onnx file"
        ) from exc
    return args.model


def sync(
    to: str,
    config: str,
    model: str | None = None,
    forecast_store: str | None = None,
    keys: bool = True,
    verbose: bool = False,
) -> int:
    """``climate sync``: the exit status (see the module's docstring)."""
    from pipelines.sync import NothingToSyncError, sync_to

    setup_logging(verbose)
    try:
        spec = read_config(ServeFile, config, [])
        args = spec.applications[0].args
        source = model_source(model) if model else args.model
        with BarProgress() as progress:
            result = sync_to(
                to,
                forecast_store or args.forecast_store,
                source,
                load_settings(),
                args.storage,
                keys=keys,
                progress=progress,
            )
    except (ModelError, NothingToSyncError) as exc:
        console.print(f"[red]refused:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return EXIT_REFUSED
    except ClimateError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return EXIT_ERROR
    manifest = result.manifest
    what = (
        f"model {manifest.model.name} {manifest.model.version}, forecast run "
        f"{manifest.run.run_id}, "
        + ("no API keys" if manifest.keys is None else f"{manifest.keys} API key(s)")
    )
    if result.changed:
        console.print(f"synced {escape(what)} into {escape(str(result.directory))}", soft_wrap=True)
    else:
        console.print(
            f"{escape(str(result.directory))} is up to date ({escape(what)})", soft_wrap=True
        )
    return EXIT_OK
