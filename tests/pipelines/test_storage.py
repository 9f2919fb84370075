"""Local copies of remote objects and checksums of local files."""

from __future__ import annotations

from pathlib import Path

import fsspec
import xxhash

from pipelines.storage import checksum_of, local_copy, stat


def test_concurrent_copies_of_one_object_do_not_share_a_file() -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/a.grib", b"GRIB" * 1000)
    stored = stat("memory://bucket/a.grib", {})
    with local_copy(stored, {}) as first, local_copy(stored, {}) as second:
        assert first != second
        assert Path(second).read_bytes() == b"GRIB" * 1000
    assert not Path(first).exists() and not Path(second).exists()


def test_checksum_is_xxh3_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 4096)
    assert checksum_of(str(path)) == "xxh3:" + xxhash.xxh3_128(path.read_bytes()).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert checksum_of(str(tmp_path / "empty")) == "xxh3:" + xxhash.xxh3_128(b"").hexdigest()
