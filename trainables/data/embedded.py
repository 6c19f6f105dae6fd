"""The embedded dataset: twenty procedurally rendered shapes, built once and cached as Parquet.

Each image shows one shape of :data:`~trainables.data.embedded_taxonomy.LEAVES` over a textured,
graded background. The shape is drawn as a mask on a grid twice as fine as the image and
area-averaged down (antialiased edges). Nuisance factors vary per image: shape and background
colours (kept apart), radius, rotation (within +-``max_rotation_deg``, so that a square never
turns into a diamond), position (the shape always stays inside) and gaussian pixel noise.

Everything is a deterministic function of :class:`EmbeddedSpec`: a split is cut into fixed-size
chunks, and chunk ``k`` of split ``s`` draws from ``SeedSequence(seed, spawn_key=(s, 1, k))``,
so the bytes do not depend on how many processes render them.

Only numpy is imported at module level: spawned render workers import this module, and leaving
torch and pyarrow out keeps their start-up short. Both are imported where they are needed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import uuid
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainables.cache import cache_dir, source_digest
from trainables.data.embedded_render import render_images
from trainables.data.embedded_spec import RENDER_SOURCES, EmbeddedSpec
from trainables.data.embedded_taxonomy import ATTRIBUTES, LEAVES
from trainables.data.splits import SPLITS, ImageSplit, check_split
from trainables.errors import UserInputError, must
from trainables.numbers import is_integer

#: Images per render chunk. Part of the seeding scheme: changing it changes the data.
CHUNK_SIZE = 512
#: Below this many images in total, rendering stays in the calling process.
PARALLEL_MIN_IMAGES = 4096

_METADATA_KEY = b"raysearch.embedded"


# --------------------------------------------------------------------------------------------
# Building a split (deterministic, chunked, optionally in worker processes)
# --------------------------------------------------------------------------------------------


def split_labels(spec: EmbeddedSpec, split: str) -> np.ndarray:
    """Balanced, shuffled labels of ``split`` (class counts differ by at most one)."""
    index = SPLITS.index(check_split(split))
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(index, 0)))
    classes = len(spec.recipe.classes)
    return rng.permutation(np.arange(spec.size(split)) % classes).astype(np.int64)


def _render_chunk(
    spec_fields: dict[str, Any], split_index: int, chunk: int, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[n, S, S, 3]`` and attributes ``[n, len(ATTRIBUTES)]`` of one chunk."""
    spec = EmbeddedSpec.from_dict(spec_fields)
    rng = np.random.default_rng(
        np.random.SeedSequence(spec.seed, spawn_key=(split_index, 1, chunk))
    )
    attributes = spec.recipe.attributes(labels, rng)
    images = render_images(
        attributes[:, 0],
        rng,
        spec.image_size,
        noise_max=spec.noise_max,
        radius_range=spec.radius_range,
        max_rotation_deg=spec.max_rotation_deg,
        colour=attributes[:, 1],
        size_class=attributes[:, 2],
        background=attributes[:, 3],
    )
    return images, attributes


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _render_in_pool(fields: dict[str, Any], jobs: list, workers: int) -> list[np.ndarray] | None:
    """Render ``jobs`` in ``workers`` spawned processes; None when the pool could not run."""
    context = multiprocessing.get_context("spawn")  # never fork a parent that runs threads
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [
                pool.submit(_render_chunk, fields, SPLITS.index(s), k, lab) for s, k, lab in jobs
            ]
            return [future.result() for future in futures]
    except BrokenProcessPool:
        # Typically a script without an `if __name__ == "__main__":` guard, which spawned
        # children re-run. Rendering in this process gives the same bytes, only slower.
        warnings.warn(
            "embedded dataset: render processes failed to start (does the main script lack an "
            "`if __name__ == '__main__':` guard?); rendering in this process instead.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def generate_splits(
    spec: EmbeddedSpec, splits: Sequence[str] = SPLITS, *, workers: int | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Render ``splits`` in memory: ``{split: (images, labels, attributes)}``.

    Images are uint8 ``[N, S, S, 3]``, labels int64 ``[N]``, attributes int64 ``[N, 4]`` (the
    columns of :data:`ATTRIBUTES`).

    ``workers`` processes render the chunks (default: up to 4 of the available cores when there
    are at least :data:`PARALLEL_MIN_IMAGES` images, else 1). The result does not depend on it.
    """
    if workers is not None and (not is_integer(workers) or workers < 1):
        raise must("workers", "a positive integer", workers)
    labels = {split: split_labels(spec, split) for split in splits}
    jobs = [
        (split, chunk, labels[split][start : start + CHUNK_SIZE])
        for split in splits
        for chunk, start in enumerate(range(0, spec.size(split), CHUNK_SIZE))
    ]
    if workers is None:
        total = sum(len(job[2]) for job in jobs)
        workers = min(_available_cpus(), 4) if total >= PARALLEL_MIN_IMAGES else 1
    workers = max(1, min(workers, len(jobs)))
    fields = spec.to_dict()
    if multiprocessing.current_process().daemon:
        workers = 1  # daemonic processes may not start children
    rendered = None
    if workers > 1:
        rendered = _render_in_pool(fields, jobs, workers)
    if rendered is None:
        rendered = [_render_chunk(fields, SPLITS.index(s), k, lab) for s, k, lab in jobs]
    size = spec.image_size
    out = {}
    for split in splits:
        parts = [part for (s, _, _), part in zip(jobs, rendered, strict=True) if s == split]
        if parts:
            images = np.concatenate([part[0] for part in parts])
            attributes = np.concatenate([part[1] for part in parts])
        else:
            images = np.empty((0, size, size, 3), np.uint8)
            attributes = np.empty((0, len(ATTRIBUTES)), np.int64)
        out[split] = (images, labels[split], attributes)
    return out


# --------------------------------------------------------------------------------------------
# Parquet cache
# --------------------------------------------------------------------------------------------


def embedded_cache_path(spec: EmbeddedSpec) -> Path:
    """The cache folder of ``spec`` (the folder itself is not created)."""
    return cache_dir("datasets") / f"embedded-{spec.key()}"


def _split_file(folder: Path, split: str) -> Path:
    return folder / f"{split}.parquet"


def is_cached(spec: EmbeddedSpec) -> bool:
    """Whether every split of ``spec`` is already in the cache."""
    folder = embedded_cache_path(spec)
    return all(_split_file(folder, split).is_file() for split in SPLITS)


def _metadata(spec: EmbeddedSpec, split: str) -> dict[bytes, bytes]:
    info = {
        "renderer": source_digest(*RENDER_SOURCES),
        "spec": spec.to_dict(),
        "split": split,
        "image_shape": [spec.image_size, spec.image_size, 3],
        "image_layout": "HWC uint8",
        "classes": list(spec.classes),
        "attributes": list(ATTRIBUTES),
    }
    return {_METADATA_KEY: json.dumps(info, sort_keys=True).encode()}


def _write_split(
    path: Path,
    spec: EmbeddedSpec,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    attributes: np.ndarray,
) -> None:
    """Write one split atomically: a uniquely named temporary file, then a rename."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = images.shape[0]
    per_image = int(np.prod(images.shape[1:]))
    large = n * per_image >= 2**31  # 32-bit offsets would overflow
    offsets = np.arange(n + 1, dtype=np.int64 if large else np.int32) * per_image
    image_column = pa.Array.from_buffers(
        pa.large_binary() if large else pa.binary(),
        n,
        [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(images))],
    )
    table = pa.table(
        {
            "image": image_column,
            "label": pa.array(labels.astype(np.int16)),
            **{
                name: pa.array(attributes[:, i].astype(np.int8))
                for i, name in enumerate(ATTRIBUTES)
            },
        },
    ).replace_schema_metadata(_metadata(spec, split))
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp, compression="none")
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    finally:
        tmp.unlink(missing_ok=True)


def _read_split(path: Path, spec: EmbeddedSpec, split: str) -> ImageSplit | None:
    """Read one cached split; None when the file is missing, unreadable or for another spec."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (FileNotFoundError, OSError, pa.ArrowException):
        return None
    raw = (table.schema.metadata or {}).get(_METADATA_KEY)
    try:
        info = json.loads(raw) if raw else {}
    except ValueError:
        return None
    expected = json.loads(_metadata(spec, split)[_METADATA_KEY])
    if info != expected or table.num_rows != spec.size(split):
        return None
    size = spec.image_size
    per_image = size * size * 3
    column = table.column("image").combine_chunks()
    if column.null_count:
        return None
    labels = table.column("label").to_numpy().astype(np.int64)
    attributes = np.stack(
        [table.column(name).to_numpy().astype(np.int64) for name in ATTRIBUTES], axis=1
    ).reshape(len(labels), len(ATTRIBUTES))
    if len(column) == 0:
        return ImageSplit.from_numpy(np.empty((0, size, size, 3), np.uint8), labels, attributes)
    offset_type = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    buffers = column.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type)
    offsets = offsets[column.offset : column.offset + len(column) + 1]
    if len(offsets) and np.any(np.diff(offsets) != per_image):
        return None
    start = int(offsets[0]) if len(offsets) else 0
    data = np.frombuffer(buffers[2], dtype=np.uint8, count=len(column) * per_image, offset=start)
    images = data.reshape(len(column), size, size, 3)
    return ImageSplit.from_numpy(images, labels, attributes)


@dataclass(frozen=True)
class EmbeddedDataset:
    """The cached embedded dataset of one spec; :meth:`split` reads (and memoises) a split."""

    spec: EmbeddedSpec
    cache_path: Path
    classes: tuple[str, ...] = LEAVES
    _loaded: dict[str, ImageSplit] = field(default_factory=dict, repr=False, compare=False)

    def split(self, name: str) -> ImageSplit:
        """The "train", "val" or "test" split."""
        check_split(name)
        if name not in self._loaded:
            path = _split_file(self.cache_path, name)
            loaded = _read_split(path, self.spec, name)
            if loaded is None:  # removed or replaced since load_embedded: rebuild it
                _build(self.spec, [name], workers=None)
                loaded = _read_split(path, self.spec, name)
            if loaded is None:
                raise UserInputError(f"could not read the embedded cache file {path}.")
            self._loaded[name] = loaded
        return self._loaded[name]

    def sizes(self) -> dict[str, int]:
        return {split: self.spec.size(split) for split in SPLITS}


def _build(spec: EmbeddedSpec, splits: Sequence[str], *, workers: int | None) -> None:
    folder = embedded_cache_path(spec)
    folder.mkdir(parents=True, exist_ok=True)
    for split, rendered in generate_splits(spec, splits, workers=workers).items():
        _write_split(_split_file(folder, split), spec, split, *rendered)


def load_embedded(
    spec: EmbeddedSpec | None = None, *, workers: int | None = None
) -> EmbeddedDataset:
    """The embedded dataset of ``spec`` (default spec when None), rendered first if not cached.

    The cache lives in ``cache_dir("datasets", f"embedded-{spec.key()}")``: one Parquet file per
    split with columns ``image`` (raw HWC uint8 bytes) and ``label``, and the spec in the schema
    metadata. Files are written atomically, so concurrent builders all end with a valid cache.
    A file that cannot be read or belongs to another spec is rendered again.
    """
    spec = EmbeddedSpec() if spec is None else spec
    if not isinstance(spec, EmbeddedSpec):
        raise must("spec", "an EmbeddedSpec or None", spec)
    folder = embedded_cache_path(spec)
    missing = [s for s in SPLITS if not _split_file(folder, s).is_file()]
    if missing:
        _build(spec, missing, workers=workers)
    return EmbeddedDataset(spec=spec, cache_path=folder, classes=spec.classes)
