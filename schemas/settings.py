"""Settings read from the environment (URLs, secrets). Built in ``main()``, never at import."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Deployment settings; each field is read from the environment variable of the same name."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str = Field(
        default="sqlite:///output/climate.db",
        description="SQLAlchemy URL; postgresql+psycopg://... in production",
    )
    model_registry_url: str = Field(
        default="output/registry",
        description="where registered ONNX files and cards live: a path or s3://bucket/prefix",
    )
    ray_address: str | None = Field(default=None, description="Ray cluster address; local if unset")
    redis_url: str | None = Field(default=None, description="Redis cache; in-process if unset")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, moto, Ceph); AWS if unset"
    )
    aws_region: str | None = Field(default=None, description="S3 region")
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None


def load_settings() -> Settings:
    """Read the settings from the environment now."""
    return Settings()
