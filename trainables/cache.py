"""Where built artefacts (datasets, base models, WordNet layouts) are cached, keyed by content."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

CACHE_ENV = "RAYSEARCH_CACHE"


def cache_dir(*parts: str) -> Path:
    """The cache folder (``$RAYSEARCH_CACHE`` or ``~/.cache/raysearch``), sub-path created."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "raysearch").expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def content_key(settings: Any, *, length: int = 16) -> str:
    """A short stable hash of JSON-able settings; equal settings always give the same key."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def source_digest(*modules: str, length: int = 16) -> str:
    """A short hash of the named modules' source files.

    Put it in the key of anything built by code, so that any edit of that code, not only the
    ones someone remembers to version, makes a new cache entry instead of reusing a stale one.
    """
    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"no source file for module {name}")
        digest.update(name.encode() + b"\0" + Path(spec.origin).read_bytes() + b"\0")
    return digest.hexdigest()[:length]
