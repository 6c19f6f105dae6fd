"""Where built artefacts (datasets, base models, WordNet layouts) are cached, keyed by content."""

from __future__ import annotations

import hashlib
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
