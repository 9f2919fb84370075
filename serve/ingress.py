"""The ingress deployment: the HTTP API of one replica and the state it answers from.

The FastAPI application is built per replica, after the constructor (``serve.ingress()`` with
``__serve_build_asgi_app__``), so its routes close over this replica's :class:`Service`: the
forecast run held in memory (loaded before the replica takes its first request) and the default
model, both kept current by background tasks.
"""

from __future__ import annotations

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from schemas.serve_config import ServeArgs
from schemas.settings import Settings
from serve.routes import build_api
from serve.service import Service


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    """HTTP routes over a :class:`Service` (runs in the replica's event loop).

    Parameters
    ----------
    args
        The application's arguments.
    settings
        Database and registry URLs, read when the application was built.
    predictor
        Handle to the predictor deployment.
    """

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self, args: ServeArgs, settings: Settings, predictor: DeploymentHandle
    ) -> None:
        self.service = Service(args, settings, predictor)
        # The first look at the forecast store happens before Serve routes any request here, so
        # a replica that replaces a dead one (or scales out) answers from the run at once
        # instead of 503 while it loads; with no run committed yet it starts not ready.
        await self.service.runs.refresh()
        self.service.start()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self.service)

    def check_health(self) -> None:
        """Serve's health check: fails when a background task stopped (the replica restarts)."""
        self.service.check_alive()

    def __del__(self) -> None:
        self.service.stop()
