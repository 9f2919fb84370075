"""API keys of the online API over the ``api_keys`` table: create, list, revoke, verify.

A key is ``ck_<key_id>_<secret>``: ``key_id`` is 12 lowercase hex digits, public (it names the
key in listings, logs and rate-limit buckets); ``secret`` is 43 letters and digits (256 random
bits), shown once by :meth:`ApiKeys.create` and never stored. The row keeps a per-key random
salt and ``HMAC-SHA256(salt, secret)``; verification compares digests in constant time.

:meth:`ApiKeys.verify` keeps the rows it read in a small in-process cache (30 s by default), so
a request does not hit the database each time. Revoking a key drops it from this process's
cache at once; other processes see the revocation when their entry expires (at most the TTL).
When the database cannot be reached, a key whose row this process read within
``max_stale_s`` still verifies against that row; any other key raises
:class:`DatabaseUnavailableError`.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import logging
import re
import secrets
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from pipelines.db import mask_url, transaction
from pipelines.errors import ClimateError, SinkError
from schemas.api_tables import ApiKey
from schemas.tables import utcnow

logger = logging.getLogger(__name__)

_KEYS: Table = ApiKey.__table__  # type: ignore[assignment]

KEY_PREFIX = "ck"
KEY_ID_HEX = 12
SECRET_LENGTH = 43  # 43 characters of 62: 256 bits
HASH_SCHEME = "hmac-sha256"
_SECRET_ALPHABET = string.ascii_letters + string.digits
_KEY_PATTERN = re.compile(
    rf"{KEY_PREFIX}_(?P<key_id>[0-9a-f]{{{KEY_ID_HEX}}})_(?P<secret>[A-Za-z0-9]{{{SECRET_LENGTH}}})"
)
_KEY_LENGTH = len(KEY_PREFIX) + KEY_ID_HEX + SECRET_LENGTH + 2
_NAME_MAX = 128
_CREATE_ATTEMPTS = 5  # a key_id collision (48 random bits) is retried with a fresh id

DEFAULT_CACHE_TTL_S = 30.0
DEFAULT_MAX_STALE_S = 300.0
DEFAULT_CACHE_SIZE = 10_000

KEY_FORMAT_HINT = f"{KEY_PREFIX}_<key id>_<secret> as printed by `climate keys create`"


class ApiKeyError(ClimateError):
    """Base of the API-key errors."""


class UnauthorizedError(ApiKeyError, PermissionError):
    """No key, a malformed key, or a key that does not match any active key (HTTP 401).

    The message is safe to show a client: it never contains the presented key.
    """


class ForbiddenError(ApiKeyError, PermissionError):
    """The key is genuine but was revoked (HTTP 403); the message names its public id."""


class KeyNotFoundError(ApiKeyError, LookupError):
    """No key has this ``key_id`` (revoking or looking one up)."""


class DatabaseUnavailableError(ApiKeyError, SinkError, ConnectionError):
    """The key could not be checked: the database is unreachable and the key is not cached.

    The message names the database (password masked) and is meant for logs, not clients.
    """


@dataclass(frozen=True)
class KeyRecord:
    """One row of ``api_keys`` without its salt and hash."""

    id: int
    key_id: str
    name: str
    rate_per_minute: int | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """Whether the key is not revoked."""
        return self.revoked_at is None


@dataclass(frozen=True)
class _Stored:
    """A row as the cache keeps it: the record and what a secret is checked against."""

    record: KeyRecord
    hash_scheme: str
    salt: bytes
    secret_hash: bytes


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode("ascii"), hashlib.sha256).digest()


def _stored(row: Row[Any]) -> _Stored:
    m = row._mapping
    record = KeyRecord(
        id=m["id"],
        key_id=m["key_id"],
        name=m["name"],
        rate_per_minute=m["rate_per_minute"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
    )
    return _Stored(
        record=record,
        hash_scheme=m["hash_scheme"],
        salt=bytes.fromhex(m["salt"]),
        secret_hash=bytes.fromhex(m["secret_hash"]),
    )


def parse_key(presented: str) -> tuple[str, str]:
    """Split a presented key into its ``key_id`` and secret.

    Parameters
    ----------
    presented
        The full key, ``ck_<key_id>_<secret>``.

    Returns
    -------
    tuple[str, str]
        ``(key_id, secret)``.

    Raises
    ------
    UnauthorizedError
        The text is not a key of this format (the message does not repeat it).
    """
    candidate = presented.strip() if isinstance(presented, str) else ""
    match = _KEY_PATTERN.fullmatch(candidate) if len(candidate) == _KEY_LENGTH else None
    if match is None:
        raise UnauthorizedError(f"the API key is malformed: expected {KEY_FORMAT_HINT}")
    return match["key_id"], match["secret"]


def key_id_of(text: str) -> str:
    """The ``key_id`` named by ``text``: a key id, or a whole key (its id is taken).

    Raises
    ------
    KeyNotFoundError
        ``text`` is neither (the message does not repeat it: it may be a mangled secret).
    """
    candidate = text.strip().lower() if isinstance(text, str) else ""
    if re.fullmatch(rf"[0-9a-f]{{{KEY_ID_HEX}}}", candidate):
        return candidate
    try:
        return parse_key(text)[0]
    except UnauthorizedError:
        raise KeyNotFoundError(
            f"not a key id: expected {KEY_ID_HEX} hex digits as `climate keys list` shows "
            "them (or the whole key)"
        ) from None


def _check_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > _NAME_MAX:
        raise ValueError(
            f"key name of {len(cleaned)} characters; give a label of 1 to {_NAME_MAX} "
            "characters naming the owner, e.g. 'acme-dashboard'"
        )
    return cleaned


def _check_rate(rate_per_minute: int | None) -> int | None:
    if rate_per_minute is None:
        return None
    if isinstance(rate_per_minute, bool) or int(rate_per_minute) != rate_per_minute:
        raise ValueError(f"rate {rate_per_minute!r} per minute is not a whole number")
    if rate_per_minute < 1:
        raise ValueError(
            f"rate {rate_per_minute} per minute is not positive; give at least 1, or none "
            "for the service's default"
        )
    return int(rate_per_minute)


class ApiKeys:
    """API keys in the database, with an in-process cache of the rows ``verify`` read.

    Parameters
    ----------
    engine
        A migrated engine (:func:`pipelines.db.make_engine`, :func:`pipelines.db.migrate`).
    cache_ttl_s
        How long a row read by :meth:`verify` is trusted without asking the database again;
        0 turns the cache off. A revocation by another process takes effect within this time.
    max_stale_s
        While the database is unreachable, a key whose row was read within this many seconds
        keeps verifying against that row; 0 refuses every uncached key during an outage.
    cache_size
        At most this many rows are cached (least recently used dropped first).
    on_database_error
        Called with the error each time :meth:`verify` fails to read the database (for a
        metric); the outage is handled here all the same.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
        max_stale_s: float = DEFAULT_MAX_STALE_S,
        cache_size: int = DEFAULT_CACHE_SIZE,
        on_database_error: Callable[[SinkError], None] | None = None,
    ) -> None:
        if cache_ttl_s < 0 or max_stale_s < 0 or cache_size < 1:
            raise ValueError(
                f"cache_ttl_s={cache_ttl_s}, max_stale_s={max_stale_s}, cache_size={cache_size}: "
                "the times must be >= 0 and the size >= 1"
            )
        self.engine = engine
        self.cache_ttl_s = cache_ttl_s
        self.max_stale_s = max(max_stale_s, cache_ttl_s)
        self.cache_size = cache_size
        # key_id -> (row, monotonic time it was read)
        self._cache: OrderedDict[str, tuple[_Stored, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.database_down = False
        """Whether the last database read of :meth:`verify` failed (cached rows stand in)."""
        self.on_database_error = on_database_error

    # -- administration -------------------------------------------------------------------

    def create(self, name: str, rate_per_minute: int | None = None) -> tuple[KeyRecord, str]:
        """Create a key; return its record and the full key, which is never shown again.

        Parameters
        ----------
        name
            Owner label (1 to 128 characters).
        rate_per_minute
            Requests per minute this key may make; ``None`` for the service's default.

        Returns
        -------
        tuple[KeyRecord, str]
            The new row and the full key ``ck_<key_id>_<secret>`` to hand to its owner.

        Raises
        ------
        ValueError
            A bad name or rate.
        SinkError
            The database refused the write.
        """
        label = _check_name(name)
        rate = _check_rate(rate_per_minute)
        for _attempt in range(_CREATE_ATTEMPTS):
            key_id = secrets.token_hex(KEY_ID_HEX // 2)
            secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
            salt = secrets.token_bytes(16)
            values = {
                "key_id": key_id,
                "name": label,
                "hash_scheme": HASH_SCHEME,
                "salt": salt.hex(),
                "secret_hash": _digest(salt, secret).hex(),
                "rate_per_minute": rate,
                "created_at": utcnow(),
                "revoked_at": None,
            }
            try:
                with transaction(self.engine) as conn:
                    row = conn.execute(insert(_KEYS).values(**values).returning(_KEYS)).one()
            except SinkError as exc:
                if isinstance(exc.__cause__, IntegrityError) and self._exists(key_id):
                    continue  # key_id collision: draw another
                raise
            record = _stored(row).record
            logger.info("created API key %s for %s", record.key_id, record.name)
            return record, f"{KEY_PREFIX}_{key_id}_{secret}"
        raise SinkError(
            f"database {mask_url(self.engine.url)}: {_CREATE_ATTEMPTS} random key ids in a row "
            "were taken; check the api_keys table's key_id values"
        )

    def _exists(self, key_id: str) -> bool:
        return self._read(key_id) is not None

    def _read(self, key_id: str) -> _Stored | None:
        with transaction(self.engine, write=False) as conn:
            row = conn.execute(select(_KEYS).where(_KEYS.c.key_id == key_id)).one_or_none()
        return None if row is None else _stored(row)

    def get(self, key_id: str) -> KeyRecord:
        """The record of one key, from the database.

        Raises
        ------
        KeyNotFoundError
            No key has this id, or it is not a key id.
        """
        key_id = key_id_of(key_id)
        stored = self._read(key_id)
        if stored is None:
            raise KeyNotFoundError(
                f"no API key with id {key_id!r}; see `climate keys list` for the ids"
            )
        return stored.record

    def list(self, *, include_revoked: bool = True) -> builtins.list[KeyRecord]:
        """Every key, oldest first (no secrets: they are not stored).

        Parameters
        ----------
        include_revoked
            Also list revoked keys.
        """
        query = select(_KEYS).order_by(_KEYS.c.created_at, _KEYS.c.id)
        if not include_revoked:
            query = query.where(_KEYS.c.revoked_at.is_(None))
        with transaction(self.engine, write=False) as conn:
            rows = conn.execute(query).all()
        return [_stored(row).record for row in rows]

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke a key: :meth:`verify` then raises :class:`ForbiddenError` for it.

        Revoking a revoked key changes nothing. This process's cache forgets the key at once;
        other processes within their cache TTL.

        Parameters
        ----------
        key_id
            The key's public id (the part after ``ck_``, as ``climate keys list`` shows it);
            the whole key is accepted too.

        Returns
        -------
        KeyRecord
            The key as revoked.

        Raises
        ------
        KeyNotFoundError
            No key has this id, or it is not a key id.
        """
        key_id = key_id_of(key_id)
        with transaction(self.engine) as conn:
            conn.execute(
                update(_KEYS)
                .where(_KEYS.c.key_id == key_id, _KEYS.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            row = conn.execute(select(_KEYS).where(_KEYS.c.key_id == key_id)).one_or_none()
        self.forget(key_id)
        if row is None:
            raise KeyNotFoundError(
                f"no API key with id {key_id!r} to revoke; see `climate keys list` for the ids"
            )
        record = _stored(row).record
        logger.info("revoked API key %s (%s)", record.key_id, record.name)
        return record

    # -- the request path -----------------------------------------------------------------

    def forget(self, key_id: str | None = None) -> None:
        """Drop one key (or, with ``None``, every key) from this process's cache."""
        with self._lock:
            if key_id is None:
                self._cache.clear()
            else:
                self._cache.pop(key_id, None)

    def _cached(self, key_id: str, max_age_s: float) -> _Stored | None:
        with self._lock:
            entry = self._cache.get(key_id)
            if entry is None:
                return None
            stored, read_at = entry
            if time.monotonic() - read_at > max_age_s:
                return None
            self._cache.move_to_end(key_id)
            return stored

    def _remember(self, stored: _Stored) -> None:
        if self.cache_ttl_s <= 0:
            return
        with self._lock:
            self._cache[stored.record.key_id] = (stored, time.monotonic())
            self._cache.move_to_end(stored.record.key_id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _lookup(self, key_id: str) -> _Stored | None:
        cached = self._cached(key_id, self.cache_ttl_s) if self.cache_ttl_s > 0 else None
        if cached is not None:
            return cached
        try:
            stored = self._read(key_id)
        except SinkError as exc:
            self.database_down = True
            if self.on_database_error is not None:
                self.on_database_error(exc)
            stale = self._cached(key_id, self.max_stale_s) if self.max_stale_s > 0 else None
            if stale is not None:
                logger.debug("API key %s: database unreachable, using its cached row", key_id)
                return stale
            raise DatabaseUnavailableError(
                f"cannot check API key {key_id}: {exc} (keys this process verified in the "
                f"last {self.max_stale_s:g} s keep working until the database is back)"
            ) from exc
        self.database_down = False
        if stored is not None:
            self._remember(stored)
        return stored

    def verify(self, presented: str) -> KeyRecord:
        """Check a presented key; return its record when it is genuine and not revoked.

        Parameters
        ----------
        presented
            The full key as the client sent it.

        Returns
        -------
        KeyRecord
            The key's record (its ``rate_per_minute`` for the rate limiter).

        Raises
        ------
        UnauthorizedError
            Malformed, unknown, or a secret that does not match (the same message for the
            last two, so a caller cannot tell which part was wrong).
        ForbiddenError
            The key was revoked.
        DatabaseUnavailableError
            The database cannot be reached and the key is not cached.
        """
        key_id, secret = parse_key(presented)
        stored = self._lookup(key_id)
        if stored is None or stored.hash_scheme != HASH_SCHEME:
            if stored is not None:
                logger.error(
                    "API key %s has hash scheme %r; this version knows only %r",
                    key_id,
                    stored.hash_scheme,
                    HASH_SCHEME,
                )
            raise UnauthorizedError(
                "the API key is not valid: check that it was copied whole, or ask for a new one"
            )
        if not hmac.compare_digest(_digest(stored.salt, secret), stored.secret_hash):
            raise UnauthorizedError(
                "the API key is not valid: check that it was copied whole, or ask for a new one"
            )
        record = stored.record
        if record.revoked_at is not None:
            raise ForbiddenError(
                f"the API key {record.key_id} was revoked on "
                f"{record.revoked_at:%Y-%m-%d %H:%M} UTC; ask for a new one"
            )
        return record
