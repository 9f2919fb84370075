"""The online application's configuration: the builder's arguments and Serve's config file.

:class:`ServeArgs` is what ``serve.app:build_app`` takes (``args:`` of an application in a
Serve config file, or a dict in tests). :class:`ServeFile` is Serve's own config-file format
(``http_options``, ``applications``) as ``configs/serve.yaml`` writes it, modelled strictly:
Serve itself ignores keys it does not know inside some sections (a misspelled autoscaling key
silently keeps its default), so ``climate serve`` validates the file here first and refuses
any unknown key anywhere, naming it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from schemas.config import StorageOptions, StrictModel
from schemas.forecast_api import QueryLimits
from schemas.model_source import ModelSource

BUILDER = "serve.app:build_app"
APP_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Autoscaling(StrictModel):
    """Ray Serve's ``autoscaling_config`` of one deployment, keys as Ray names them."""

    min_replicas: int = Field(default=1, ge=0)
    initial_replicas: int | None = Field(default=None, ge=0, description="min_replicas if None")
    max_replicas: int = Field(default=1, ge=1)
    target_ongoing_requests: float = Field(
        default=2.0, gt=0, description="requests in flight per replica the autoscaler aims at"
    )
    upscale_delay_s: float = Field(default=30.0, ge=0)
    downscale_delay_s: float = Field(default=600.0, ge=0)
    look_back_period_s: float = Field(default=30.0, gt=0)
    metrics_interval_s: float | None = Field(
        default=None, gt=0, description="deprecated by Ray; passed only when set"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas {self.max_replicas} is below min_replicas {self.min_replicas}"
            )
        initial = self.initial_replicas
        if initial is not None and not self.min_replicas <= initial <= self.max_replicas:
            raise ValueError(
                f"initial_replicas {initial} must lie in min_replicas..max_replicas "
                f"({self.min_replicas}..{self.max_replicas})"
            )
        return self

    def to_ray(self) -> dict[str, Any]:
        """The ``autoscaling_config`` dict for ``Deployment.options`` (unset keys left out)."""
        return self.model_dump(exclude_none=True)


class DeploymentOptions(StrictModel):
    """How one deployment scales and how much it takes on."""

    autoscaling: Autoscaling = Autoscaling()
    max_ongoing_requests: int = Field(
        default=16, ge=1, description="requests a replica works on at once"
    )
    max_queued_requests: int = Field(
        default=-1, ge=-1, description="requests queued per caller before 503; -1: no limit"
    )
    retry_after_s: float = Field(
        default=1.0, ge=0, le=3600, description="Retry-After of the 503 beyond the queue"
    )
    num_cpus: float = Field(default=1.0, ge=0, description="logical CPUs reserved per replica")

    def ray_options(self) -> dict[str, Any]:
        """Keyword arguments of ``Deployment.options`` for these settings."""
        return {
            "autoscaling_config": self.autoscaling.to_ray(),
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": {"status_code": 503, "retry_after_s": self.retry_after_s},
            "ray_actor_options": {"num_cpus": self.num_cpus},
        }


class IngressOptions(DeploymentOptions):
    """The HTTP deployment: parses, validates, answers point queries, forwards predictions."""

    max_ongoing_requests: int = Field(default=64, ge=1)
    num_cpus: float = Field(default=0.5, ge=0)


class Batching(StrictModel):
    """Dynamic batching of predictions.

    Each ingress replica gathers concurrent requests for up to ``batch_wait_timeout_s``
    (``@serve.batch``) into one predictor call per model, of at most ``max_batch_size``; the
    predictor merges the calls that queued while it worked and stacks jobs that share lead
    times and grid into rollouts of at most ``max_batch_size`` (its ``user_config``: changed
    there without a restart).
    """

    max_batch_size: int = Field(default=8, ge=1)
    batch_wait_timeout_s: float = Field(default=0.01, ge=0)


class PredictorOptions(DeploymentOptions):
    """The model deployment: ONNX Runtime sessions, multiplexed by model id, batched."""

    max_ongoing_requests: int = Field(default=16, ge=1)
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs per replica (device cuda)")
    batching: Batching = Batching()
    max_models_per_replica: int = Field(
        default=3, ge=1, description="model versions a replica keeps loaded (LRU)"
    )

    def ray_options(self) -> dict[str, Any]:
        options = super().ray_options()
        options["ray_actor_options"]["num_gpus"] = self.num_gpus
        options["user_config"] = self.batching.model_dump()
        return options


class Limits(StrictModel):
    """What one request may ask for."""

    max_body_bytes: int = Field(default=64 * 2**20, ge=1024, description="request body size")
    max_locations: int = Field(default=100, ge=1, description="points of one forecast query")
    max_forecast_hours: int = Field(default=240, ge=1, description="hours of one forecast query")
    max_predict_lead_hours: int = Field(default=240, ge=1, description="longest predict lead")

    def query_limits(self) -> QueryLimits:
        """The limits of the point-forecast query parser."""
        return QueryLimits(
            max_locations=self.max_locations, max_forecast_hours=self.max_forecast_hours
        )


class AuthOptions(StrictModel):
    """API keys and per-key rate limits of the ``/v1`` routes (:mod:`serve.security`)."""

    required: bool = Field(
        default=True,
        description="every /v1 request needs an API key; false (an open API) only where "
        "written out, for local demos and tests",
    )
    default_rate_per_minute: int = Field(
        default=60, ge=1, description="requests per minute of a key without its own rate"
    )
    key_cache_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="a verified key is trusted this long without asking the database; a "
        "revocation takes effect on every replica within it",
    )
    key_stale_seconds: float = Field(
        default=300.0,
        ge=0,
        description="while the database is unreachable, keys a replica verified within this "
        "many seconds keep working",
    )
    redis_retry_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="after a Redis failure, limits are kept per replica this long before "
        "Redis is tried again",
    )
    keys_file: str | None = Field(
        default=None,
        description="check keys against this file of key hashes (keys.json of `climate sync`) "
        "instead of the database; unset: the database's api_keys table",
    )


class ServeArgs(StrictModel):
    """Arguments of ``serve.app:build_app``: what the online application serves and how.

    URLs of the database, the model registry and Redis come from the environment
    (``DATABASE_URL``, ``MODEL_REGISTRY_URL``, ``REDIS_URL``), read when the application is
    built; with ``offline`` none of them is used.
    """

    forecast_store: str = Field(description="forecast store URL, as output.zarr.url of predict")
    model: ModelSource = Field(
        description="the default model: {name, version: promoted} follows the registry's "
        "promoted version; a pinned version or {kind: file, path} stays fixed"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(default=1, ge=1, description="ONNX Runtime threads per predictor replica")
    refresh_seconds: float = Field(
        default=30.0,
        gt=0,
        le=86_400,
        description="how often replicas look for a newer forecast run and promoted model",
    )
    limits: Limits = Limits()
    auth: AuthOptions = AuthOptions()
    storage: StorageOptions = StorageOptions()
    ingress: IngressOptions = IngressOptions()
    predictor: PredictorOptions = PredictorOptions()
    offline: bool = Field(
        default=False,
        description="answer from local files only (`climate serve --offline DIR` sets it): the "
        "model a file, API keys from auth.keys_file, rate limits per replica; the database, "
        "the model registry and Redis are never contacted",
    )

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        """``name``, ``name:version`` or ``path.onnx`` (``serve run ... model=NAME``)."""
        if not isinstance(value, str):
            return value
        if value.endswith(".onnx"):
            return {"kind": "file", "path": value}
        name, _, version = value.partition(":")
        return {"kind": "registry", "name": name, "version": version or "promoted"}

    @model_validator(mode="after")
    def _offline_needs_no_server(self) -> ServeArgs:
        if not self.offline:
            return self
        if self.model.kind != "file":
            raise ValueError(
                "offline: model must be a file ({kind: file, path}); the registry is not "
                "reachable offline (`climate sync` copies the promoted model to a file)"
            )
        if self.auth.required and self.auth.keys_file is None:
            raise ValueError(
                "offline: auth.required needs auth.keys_file (keys.json of `climate sync`), "
                "the database is not reachable offline; or set auth.required: false"
            )
        return self


class HttpOptions(StrictModel):
    """Serve's ``http_options``: where the HTTP proxy listens (fixed once Serve started)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65_535)
    request_timeout_s: float | None = Field(default=None, gt=0)
    keep_alive_timeout_s: int | None = Field(default=None, ge=1)

    def to_ray(self) -> dict[str, Any]:
        """The ``http_options`` dict for ``serve.start`` (unset keys left out)."""
        return self.model_dump(exclude_none=True)


class ServeApplication(StrictModel):
    """One application of the file: this project's builder and its arguments."""

    name: str = Field(default="climate", pattern=APP_NAME_PATTERN)
    route_prefix: str = Field(default="/", pattern=r"^/")
    import_path: Literal["serve.app:build_app"] = "serve.app:build_app"
    args: ServeArgs


class ServeFile(StrictModel):
    """``configs/serve.yaml``: Serve's config-file format, only the keys this project uses."""

    proxy_location: Literal["Disabled", "HeadOnly", "EveryNode"] | None = None
    http_options: HttpOptions = HttpOptions()
    applications: list[ServeApplication] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> ServeFile:
        for what in ("name", "route_prefix"):
            values = [getattr(app, what) for app in self.applications]
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"applications share the {what} {twice}; give each its own")
        return self
