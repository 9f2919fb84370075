"""``climate serve --config configs/serve.yaml``: the online application on Ray Serve.

Validates Serve's config file strictly (:class:`~schemas.serve_config.ServeFile`: an unknown
key anywhere is refused, named, exit 2), starts a local Ray (or joins ``RAY_ADDRESS``), starts
Serve with the file's ``http_options`` and runs each application through its builder (the
file's ``import_path``, as ``serve deploy`` does), then blocks until SIGTERM or Ctrl-C and shuts
Serve down. Joined to a cluster, only this file's applications are deleted at the end.

``climate serve --offline DIR`` serves the first application of the file from a directory
written by ``climate sync --to DIR`` (:func:`offline_spec`): its forecast store and model file,
its API-key hashes, rate limits in process; the database, the model registry and Redis are never
contacted. A directory that is not a complete, unchanged sync is refused (exit 2).
"""

from __future__ import annotations

import importlib
import json
import logging
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.markup import escape

from jobs.common import EXIT_ERROR, EXIT_OK, console, read_config, setup_logging
from pipelines.errors import ClimateError, ConfigError
from pipelines.ray_data import ensure_ray
from schemas.config import RayConfig
from schemas.serve_config import HttpOptions, ServeApplication, ServeArgs, ServeFile
from schemas.settings import load_settings

log = logging.getLogger(__name__)


def load_serve_file(path: str, host: str | None = None, port: int | None = None) -> ServeFile:
    """The validated config file with ``--host``/``--port`` applied; ConfigError naming keys."""
    spec = read_config(ServeFile, path, [])
    changes: dict[str, Any] = {}
    if host is not None:
        changes["host"] = host
    if port is not None:
        changes["port"] = port
    if not changes:
        return spec
    try:
        http = HttpOptions.model_validate({**spec.http_options.model_dump(), **changes})
    except ValueError as exc:
        raise ConfigError(f"--host/--port: {exc}") from exc
    return spec.model_copy(update={"http_options": http})


def offline_spec(spec: ServeFile, directory: str | Path) -> ServeFile:
    """The file's first application, serving from a synced directory with no server reached.

    The application's arguments keep their limits, scaling and ``auth`` settings; the forecast
    store becomes ``DIR/forecast``, the model ``DIR/model/model.onnx`` (kind file), API keys
    the synced hashes (``DIR/keys.json``) and ``offline`` is set. Paths go through ``DIR``
    itself, so a later sync into it (a symlink swap) is followed like a new run or promotion.

    Raises
    ------
    ConfigError
        ``directory`` is not a complete, unchanged sync (names what is wrong), or the file
        requires API keys and the sync holds none.
    """
    from pipelines.sync import FORECAST_DIR, KEYS_FILE, MODEL_FILE, verify_sync

    root = Path(directory).absolute()  # not resolved: DIR is the symlink a re-sync swaps
    manifest = verify_sync(root)
    application = spec.applications[0]
    if len(spec.applications) > 1:
        log.warning("offline: serving only the first application of the file, %s", application.name)
    args = application.args
    keys_file = None
    if args.auth.required:
        if manifest.keys is None:
            raise ConfigError(
                f"{root} was synced without API keys (--no-keys) and auth.required is true: "
                "sync again without --no-keys, or set auth.required: false to serve the "
                "offline API without keys"
            )
        keys_file = str(root / KEYS_FILE)
    changes = {
        "forecast_store": str(root / FORECAST_DIR),
        "model": {"kind": "file", "path": str(root / MODEL_FILE)},
        "auth": {**args.auth.model_dump(), "keys_file": keys_file},
        "offline": True,
    }
    try:
        offline = ServeArgs.model_validate({**args.model_dump(), **changes})
    except ValueError as exc:
        raise ConfigError(f"--offline {root}: {exc}") from exc
    log.info(
        "offline: model %s %s, forecast run %s, synced %s",
        manifest.model.name,
        manifest.model.version,
        manifest.run.run_id,
        manifest.synced_at.isoformat(timespec="seconds"),
    )
    return spec.model_copy(
        update={"applications": [application.model_copy(update={"args": offline})]}
    )


def _builder(application: ServeApplication) -> Any:
    """The application's builder, imported by its import path as Serve's config deploy does."""
    module, _, attribute = application.import_path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def base_url(spec: ServeFile, application: ServeApplication | None = None) -> str:
    """The HTTP address of an application (the first one by default)."""
    app = application or spec.applications[0]
    host = spec.http_options.host
    host = "127.0.0.1" if host in {"0.0.0.0", "::"} else host
    return f"http://{host}:{spec.http_options.port}{app.route_prefix.rstrip('/')}"


def deploy(spec: ServeFile) -> None:
    """Start Serve with the file's HTTP options and run every application (Ray must be up).

    Raises
    ------
    ClimateError
        An application failed to deploy (its replicas could not start); the reason is kept.
    """
    from ray import serve

    serve.start(http_options=spec.http_options.to_ray(), proxy_location=spec.proxy_location)
    for application in spec.applications:
        app = _builder(application)(application.args)
        try:
            serve.run(app, name=application.name, route_prefix=application.route_prefix)
        except RuntimeError as exc:
            raise ClimateError(f"application {application.name} did not start: {exc}") from exc


def undeploy(spec: ServeFile, joined: bool) -> None:
    """Delete this file's applications (joined to a cluster) or shut Serve down (local Ray)."""
    from ray import serve

    if not joined:
        serve.shutdown()
        return
    for application in spec.applications:
        serve.delete(application.name)


@contextmanager
def serving(spec: ServeFile, joined: bool = False) -> Iterator[str]:
    """Deploy the file's applications for the ``with`` block; yields the first one's URL."""
    try:
        deploy(spec)
        yield base_url(spec)
    finally:
        undeploy(spec, joined)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 180.0) -> dict[str, Any]:
    """Poll ``url/ready`` until it answers 200; its body. ClimateError with the reasons after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=10) as response:
                body: dict[str, Any] = json.load(response)
                return body
        except urllib.error.HTTPError as exc:
            try:  # the application's JSON reason; Serve's proxy answers text before it deploys
                last = json.loads(exc.read() or b"{}").get("reason", f"HTTP {exc.code}")
            except ValueError:
                last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise ClimateError(f"{url} is not ready after {timeout:.0f} s: {last}")


def quiet_serve_logs(verbose: bool = False) -> None:
    """Serve's own INFO lines (deploy steps) only with ``--verbose``."""
    import ray.serve  # configures its logger on import: set the level after that

    logging.getLogger(ray.serve.__name__).setLevel(logging.INFO if verbose else logging.WARNING)


@contextmanager
def _stop_on_sigterm() -> Iterator[threading.Event]:
    """An event SIGTERM sets, for the ``with`` block (installed before the deploy, so a
    SIGTERM while the applications start stops them cleanly too)."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_for_stop(stop: threading.Event) -> None:
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass


def serve_forever(
    config: str,
    host: str | None = None,
    port: int | None = None,
    verbose: bool = False,
    offline: str | None = None,
) -> int:
    """``climate serve``: deploy, block until SIGTERM/Ctrl-C, shut down; the exit status.

    With ``offline`` (a directory of ``climate sync``), serve from it alone (:func:`offline_spec`).
    """
    setup_logging(verbose)
    quiet_serve_logs(verbose)
    try:
        spec = load_serve_file(config, host, port)
        if offline is not None:
            spec = offline_spec(spec, offline)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return EXIT_ERROR
    settings = load_settings()
    ensure_ray(RayConfig(), settings)
    joined = settings.ray_address is not None
    try:
        with _stop_on_sigterm() as stop, serving(spec, joined) as url:
            console.print(f"serving at {url}/ (OpenAPI: {url}/docs); Ctrl-C or SIGTERM stops it")
            _wait_for_stop(stop)
            console.print("stopping")
    except ClimateError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return EXIT_ERROR
    return EXIT_OK
