"""API keys on SQLite and PostgreSQL: hashes only, verification, revocation, cache, CLI."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from jobs.common import EXIT_ERROR, EXIT_OK, EXIT_REFUSED
from jobs.keys import app
from pipelines.api_keys import (
    ApiKeys,
    DatabaseUnavailableError,
    ForbiddenError,
    KeyNotFoundError,
    KeyRecord,
    UnauthorizedError,
    key_id_of,
    parse_key,
)
from pipelines.db import make_engine, migrate
from pipelines.errors import SinkError

runner = CliRunner()


def _rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text("SELECT * FROM api_keys"))]


def test_create_list_revoke(engine: Engine) -> None:
    keys = ApiKeys(engine)
    first, first_key = keys.create("acme-dashboard")
    second, second_key = keys.create("  nightly-export ", rate_per_minute=600)

    assert first_key.startswith(f"ck_{first.key_id}_") and first.key_id != second.key_id
    assert first.name == "acme-dashboard" and second.name == "nightly-export"
    assert first.rate_per_minute is None and second.rate_per_minute == 600
    assert first.active and first.created_at.tzinfo is not None
    assert [r.key_id for r in keys.list()] == [first.key_id, second.key_id]

    revoked = keys.revoke(first.key_id)
    assert not revoked.active and revoked.revoked_at is not None
    assert keys.revoke(first.key_id).revoked_at == revoked.revoked_at  # idempotent
    assert [r.key_id for r in keys.list(include_revoked=False)] == [second.key_id]
    assert keys.get(first.key_id) == revoked
    assert keys.verify(second_key) == second


def test_only_a_salted_hash_is_stored(engine: Engine) -> None:
    keys = ApiKeys(engine)
    _, key_a = keys.create("a")
    _, key_b = keys.create("b")
    rows = {row["key_id"]: row for row in _rows(engine)}
    for key in (key_a, key_b):
        key_id, secret = parse_key(key)
        row = rows[key_id]
        stored = " ".join(str(value) for value in row.values())
        assert secret not in stored and key not in stored
        assert row["hash_scheme"] == "hmac-sha256"
        salt = bytes.fromhex(str(row["salt"]))
        expected = hmac.new(salt, secret.encode(), hashlib.sha256).hexdigest()
        assert row["secret_hash"] == expected
        assert row["secret_hash"] != hashlib.sha256(secret.encode()).hexdigest()  # salted
    assert rows[parse_key(key_a)[0]]["salt"] != rows[parse_key(key_b)[0]]["salt"]


def test_verify_ok_unknown_malformed_and_revoked(engine: Engine) -> None:
    keys = ApiKeys(engine)
    record, key = keys.create("acme", rate_per_minute=5)
    assert keys.verify(key) == record
    assert keys.verify(f"  {key}\n") == record  # surrounding blanks from copy and paste

    key_id, secret = parse_key(key)
    wrong_secret = f"ck_{key_id}_{'A' * len(secret)}"
    unknown_id = f"ck_{'0' * len(key_id)}_{secret}"
    not_valid = "the API key is not valid"
    for presented in (wrong_secret, unknown_id):
        with pytest.raises(UnauthorizedError, match=not_valid) as info:
            keys.verify(presented)
        assert secret not in str(info.value) and presented not in str(info.value)

    for malformed in ("", "nonsense", key[:-1], key + "x", key.replace("ck_", "sk_"), "ck__x"):
        with pytest.raises(UnauthorizedError, match="malformed") as info:
            keys.verify(malformed)
        assert "climate keys create" in str(info.value)
        assert secret not in str(info.value)

    keys.revoke(record.key_id)
    with pytest.raises(ForbiddenError, match=f"{record.key_id} was revoked") as forbidden:
        keys.verify(key)
    assert secret not in str(forbidden.value)
    with pytest.raises(UnauthorizedError):  # no secret, no word on revocation
        keys.verify(wrong_secret)


def test_the_cache_spares_the_database_and_revoke_invalidates_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = ApiKeys(engine, cache_ttl_s=60)
    record, key = keys.create("acme")
    reads: list[str] = []
    real_read = keys._read

    def counting_read(key_id: str) -> object:
        reads.append(key_id)
        return real_read(key_id)

    monkeypatch.setattr(keys, "_read", counting_read)
    for _ in range(5):
        assert keys.verify(key) == record
    assert reads == [record.key_id]
    with pytest.raises(UnauthorizedError):  # the cached row is checked against every secret
        keys.verify(key[:-1] + ("a" if key[-1] != "a" else "b"))

    # Another process (here: another ApiKeys) revokes: this one trusts its cache up to the TTL.
    ApiKeys(engine).revoke(record.key_id)
    assert keys.verify(key) == record
    keys.revoke(record.key_id)  # revoking in this process forgets the key at once
    with pytest.raises(ForbiddenError):
        keys.verify(key)


def test_the_cache_expires(engine: Engine) -> None:
    keys = ApiKeys(engine, cache_ttl_s=0.2)
    record, key = keys.create("acme")
    keys.verify(key)
    ApiKeys(engine).revoke(record.key_id)
    keys.verify(key)  # cached
    time.sleep(0.3)
    with pytest.raises(ForbiddenError):
        keys.verify(key)


def test_a_database_outage(tmp_path: Path) -> None:
    """Cached keys keep working while the database is away; others fail with a clear error."""
    path = tmp_path / "climate.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    failed_reads: list[SinkError] = []
    keys = ApiKeys(engine, cache_ttl_s=0.01, max_stale_s=60, on_database_error=failed_reads.append)
    record, key = keys.create("acme")
    _, uncached = keys.create("other")
    keys.verify(key)
    engine.dispose()
    with engine.begin() as conn:  # the table goes away: every read now fails
        conn.exec_driver_sql("DROP TABLE api_keys")
    time.sleep(0.05)  # past the TTL: the database is asked, fails, the stale row is used
    assert keys.verify(key) == record
    with pytest.raises(DatabaseUnavailableError, match="cannot check API key") as info:
        keys.verify(uncached)
    assert isinstance(info.value, ConnectionError)
    assert "DATABASE_URL" in str(info.value) and parse_key(uncached)[1] not in str(info.value)
    assert len(failed_reads) == 2  # each failed read is reported, the stale row's included

    strict = ApiKeys(engine, cache_ttl_s=0.01, max_stale_s=0)
    with pytest.raises(DatabaseUnavailableError):
        strict.verify(key)
    engine.dispose()


def test_an_unreachable_postgres_is_database_unavailable() -> None:
    engine = make_engine("postgresql://climate:pw-s3cret@127.0.0.1:1/climate", check=False)
    keys = ApiKeys(engine)
    with pytest.raises(DatabaseUnavailableError) as info:
        keys.verify(f"ck_{'a' * 12}_{'B' * 43}")
    assert "pw-s3cret" not in str(info.value) and "climate:***@" in str(info.value)
    engine.dispose()


def test_bad_names_rates_and_key_ids(engine: Engine) -> None:
    keys = ApiKeys(engine)
    with pytest.raises(ValueError, match="label of 1 to 128"):
        keys.create("   ")
    with pytest.raises(ValueError, match="not positive"):
        keys.create("x", rate_per_minute=0)
    with pytest.raises(KeyNotFoundError, match="no API key with id"):
        keys.revoke("0123456789ab")
    with pytest.raises(KeyNotFoundError, match="not a key id") as info:
        keys.revoke("ck_not-a-key-hunter2")
    assert "hunter2" not in str(info.value)
    record, key = keys.create("x")
    assert key_id_of(key) == record.key_id  # the whole key names its id
    assert keys.revoke(key).key_id == record.key_id
    assert _rows(engine)[0]["rate_per_minute"] is None


# -- the CLI ------------------------------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'climate.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    return url


def climate_keys(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.output


def test_cli_create_list_revoke(database: str) -> None:
    code, _, output = climate_keys("list")
    assert code == EXIT_OK and "no API keys" in output

    code, stdout, output = climate_keys("create", "acme-dashboard", "--rate", "120")
    assert code == EXIT_OK
    key = stdout.strip()
    key_id, _ = parse_key(key)  # stdout holds the key alone
    assert "cannot" not in stdout and "only time the key is shown" in output
    assert f"created API key {key_id} for acme-dashboard (rate per minute: 120)" in output

    code, stdout, _ = climate_keys("create", "other")
    assert code == EXIT_OK
    other = stdout.strip()

    code, _, output = climate_keys("list")
    assert code == EXIT_OK and key_id in output and "acme-dashboard" in output
    assert "120" in output and "default" in output and key not in output

    engine = make_engine(database)
    record = ApiKeys(engine).verify(key)
    assert isinstance(record, KeyRecord) and record.rate_per_minute == 120

    code, _, output = climate_keys("revoke", key_id)
    assert code == EXIT_OK and f"revoked API key {key_id} (acme-dashboard)" in output
    with pytest.raises(ForbiddenError):
        ApiKeys(engine).verify(key)
    assert ApiKeys(engine).verify(other).name == "other"
    code, _, output = climate_keys("list", "--active")
    assert code == EXIT_OK and key_id not in output and "other" in output
    engine.dispose()


def test_cli_refusals_and_errors(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, output = climate_keys("revoke", "0123456789ab")
    assert code == EXIT_REFUSED and "no API key with id" in output and "climate keys list" in output
    code, _, output = climate_keys("create", "x", "--rate", "0")
    assert code != EXIT_OK and "--rate" in output
    code, _, output = climate_keys("create", " ")
    assert code == EXIT_ERROR and "label of 1 to 128" in output

    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw-s3cret@127.0.0.1:1/db")
    code, _, output = climate_keys("list")
    assert code == EXIT_ERROR and "PostgreSQL running" in output and "pw-s3cret" not in output


def test_the_climate_command_has_keys() -> None:
    from jobs.cli import app as climate

    result = runner.invoke(climate, ["keys", "--help"])
    assert result.exit_code == EXIT_OK
    assert "create" in result.output and "revoke" in result.output
