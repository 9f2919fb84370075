"""The online application: one typed builder for ``serve run``, ``serve deploy``, ``climate
serve``, the demo and the tests.

::

    serve run serve.app:build_app forecast_store=output/forecast.zarr model=t2m-resconv
    serve deploy configs/serve.yaml                                         # a cluster
    climate serve --config configs/serve.yaml                               # this project
    climate serve --offline edge/          # from `climate sync --to edge/`, nothing else reached
"""

from __future__ import annotations

from typing import Any, cast

from ray import serve

from schemas.serve_config import ServeArgs
from schemas.settings import load_settings
from serve.ingress import Ingress
from serve.predictor import Predictor


def build_app(args: ServeArgs | dict[str, Any]) -> serve.Application:
    """The application: an HTTP ingress and a batched, multiplexed predictor.

    Parameters
    ----------
    args
        :class:`~schemas.serve_config.ServeArgs`, or a dict of them (validated here, so bad
        arguments fail at deploy time naming the key). ``DATABASE_URL`` (models and API
        keys), ``MODEL_REGISTRY_URL`` and ``REDIS_URL`` (rate limits) are read from the
        environment now; with ``offline`` they are never used.

    Returns
    -------
    ray.serve.Application
        Ready for ``serve.run`` (or Serve's config-file deploy).

    Raises
    ------
    pydantic.ValidationError
        The arguments are invalid; every problem is named with its key.
    """
    checked = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(args)
    settings = load_settings()
    predictor = cast(serve.Deployment, Predictor).options(**checked.predictor.ray_options())
    ingress = cast(serve.Deployment, Ingress).options(**checked.ingress.ray_options())
    return ingress.bind(checked, settings, predictor.bind(checked, settings))
