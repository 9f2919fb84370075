"""Which code is running: the git commit of this checkout, or the installed package version."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE = "climate-pipeline"


def git_commit() -> str | None:
    """The checkout's commit (12 hex digits, ``+dirty`` when tracked files are modified), or
    None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def package_version() -> str | None:
    """The installed package's version, or None when it is not installed."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def code_version() -> str:
    """The commit where there is one, else ``climate-pipeline <version>``, else ``unknown``."""
    commit = git_commit()
    if commit is not None:
        return commit
    version = package_version()
    return f"{PACKAGE} {version}" if version else "unknown"


def described_version() -> str:
    """Package version and commit together, e.g. ``climate-pipeline 0.1.0 (d136e04a1b2c)``."""
    version = package_version()
    named = f"{PACKAGE} {version}" if version else f"{PACKAGE} (not installed)"
    commit = git_commit()
    return f"{named} ({commit})" if commit else named
