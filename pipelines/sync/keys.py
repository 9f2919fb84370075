"""API keys of an offline service: the hashes of the keys not revoked, carried in ``keys.json``.

:func:`export_keys` reads the ``api_keys`` rows that are not revoked: public id, owner label,
rate, salt and ``HMAC-SHA256(salt, secret)``, never a secret (none is stored). An offline
service loads them with :func:`keys_engine` into an in-memory SQLite ``api_keys`` table, so
:class:`pipelines.api_keys.ApiKeys` checks keys exactly as it does online without a database
server. A key revoked after the sync keeps working offline until the next sync.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, insert, select

from pipelines.db import make_engine, transaction, translate_errors
from pipelines.errors import ConfigError, SinkError
from schemas.api_tables import ApiKey

_KEYS: Table = ApiKey.__table__  # type: ignore[assignment]
FORMAT = 1
COLUMNS = ("key_id", "name", "hash_scheme", "salt", "secret_hash", "rate_per_minute", "created_at")


def export_keys(engine: Engine) -> bytes:
    """``keys.json`` for the keys of ``engine``'s ``api_keys`` table that are not revoked.

    The bytes are the same for the same keys (sorted by key id), so a sync can tell whether
    they changed.

    Raises
    ------
    SinkError
        The database cannot be read (the message names it, password masked).
    """
    columns = [_KEYS.c[name] for name in COLUMNS]
    query = select(*columns).where(_KEYS.c.revoked_at.is_(None)).order_by(_KEYS.c.key_id)
    with transaction(engine, write=False) as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
    for row in rows:
        row["created_at"] = row["created_at"].isoformat()
    body = {"format": FORMAT, "keys": rows}
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def _rows(path: Path) -> list[dict[str, Any]]:
    fix = "run `climate sync` again"
    try:
        body = json.loads(path.read_bytes())
        rows = body["keys"]
        if body.get("format") != FORMAT or not isinstance(rows, list):
            raise ValueError(f"format {body.get('format')!r}, expected {FORMAT}")
        return [
            {
                **{name: row[name] for name in COLUMNS},
                "created_at": datetime.fromisoformat(row["created_at"]),
                "revoked_at": None,
            }
            for row in rows
        ]
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the API keys ({exc.strerror}); {fix}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a keys file of `climate sync` ({exc}); {fix}") from exc


def keys_engine(path: str | Path) -> Engine:
    """An in-memory SQLite database whose ``api_keys`` table holds the keys of ``path``.

    Raises
    ------
    ConfigError
        The file cannot be read or is not a keys file of ``climate sync``.
    """
    rows = _rows(Path(path))
    engine = make_engine("sqlite://", check=False)
    try:
        with translate_errors(engine, "create the api_keys table"):
            _KEYS.create(engine)
        if rows:
            with transaction(engine) as conn:
                conn.execute(insert(_KEYS), rows)
    except SinkError as exc:
        engine.dispose()
        raise ConfigError(f"{path}: the API keys cannot be loaded ({exc})") from exc
    return engine
