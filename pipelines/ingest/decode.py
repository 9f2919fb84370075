"""Open one file through its reader, bring it to the canonical schema, decode what is asked."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import xarray as xr
import xxhash

from pipelines.canonical import normalise
from pipelines.errors import ClimateError, SourceError
from pipelines.sources import reader_for
from pipelines.storage import StoredFile, local_copy
from schemas.config import SourceConfig


@contextmanager
def opened(
    stored: StoredFile, source: SourceConfig, options: dict[str, Any]
) -> Iterator[tuple[str, xr.Dataset]]:
    """Yield ``(local location, canonical lazy dataset)`` for one file or store."""
    reader = reader_for(source)
    if reader.is_store:
        yield stored.url, normalise(reader.open(stored.url, options), source, stored.url)
        return
    if stored.size == 0:
        raise SourceError(stored.url, "is empty (0 bytes); re-download or remove it")
    with local_copy(stored, options) as location:
        try:
            raw = reader.open(location, options)
        except SourceError as exc:
            raise exc.renamed(stored.url) from exc
        try:
            yield location, normalise(raw, source, stored.url)
        finally:
            raw.close()


def load(dataset: xr.Dataset, url: str) -> xr.Dataset:
    """Decode every value of ``dataset`` now; a decoder error names the file and the fix."""
    try:
        return dataset.load()
    except ClimateError:
        raise
    except Exception as exc:  # decoder errors of every library, translated with the cause kept
        raise SourceError(
            url,
            f"fails while decoding its values ({type(exc).__name__}: {exc}); the file is corrupt "
            "or truncated: re-download it",
        ) from exc


def time_digests(dataset: xr.Dataset, seconds: np.ndarray) -> dict[int, str]:
    """One digest of every variable's values per time of a loaded dataset whose times are
    ``seconds`` (epoch seconds), to spot files that disagree on a time they share."""
    names = sorted(str(name) for name in dataset.data_vars)
    arrays = [np.ascontiguousarray(dataset[name].values) for name in names]
    digests = {}
    for index, second in enumerate(seconds.tolist()):
        digest = xxhash.xxh3_128()
        for values in arrays:
            digest.update(memoryview(values[index]))
        digests[int(second)] = digest.hexdigest()
    return digests
