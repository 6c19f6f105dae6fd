"""The embedded dataset: rendering, determinism, the Parquet cache, and the dataset registry."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from trainables.data import embedded
from trainables.data.class_lists import DATASETS
from trainables.data.embedded import (
    CHUNK_SIZE,
    embedded_cache_path,
    generate_splits,
    is_cached,
    load_embedded,
    split_labels,
)
from trainables.data.embedded_render import render_images
from trainables.data.embedded_shapes import draw_masks
from trainables.data.embedded_spec import EmbeddedSpec
from trainables.data.embedded_taxonomy import LEAVES
from trainables.data.registry import available_datasets, load_split
from trainables.data.splits import SPLITS, ImageSplit
from trainables.errors import UserInputError

N_CLASSES = len(LEAVES)
SMALL = EmbeddedSpec(n_train=200, n_val=40, n_test=40)


@pytest.fixture(autouse=True)
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSEARCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# -- spec ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image_size", 48),
        ("image_size", 16),
        ("image_size", 32.0),
        ("seed", -1),
        ("seed", True),
        ("n_train", 5),
        ("n_val", -1),
        ("n_test", "10"),
        ("noise_max", 0.9),
        ("noise_max", float("nan")),
        ("radius_range", (0.4, 0.2)),
        ("radius_range", (0.3, 0.6)),
        ("max_rotation_deg", 90),
    ],
)
def test_bad_spec_values_name_the_field(field, value):
    with pytest.raises(UserInputError, match=f"`{field}` must be") as caught:
        EmbeddedSpec(**{field: value})
    assert "\n" not in str(caught.value)


def test_spec_key_is_stable_and_tracks_every_field():
    assert EmbeddedSpec().key() == EmbeddedSpec().key()
    assert EmbeddedSpec(radius_range=[0.28, 0.47]) == EmbeddedSpec()
    keys = {
        EmbeddedSpec().key(),
        EmbeddedSpec(seed=1).key(),
        EmbeddedSpec(image_size=64).key(),
        EmbeddedSpec(n_val=10).key(),
        EmbeddedSpec(noise_max=0.0).key(),
        EmbeddedSpec(max_rotation_deg=10).key(),
    }
    assert len(keys) == 6
    assert EmbeddedSpec.from_dict(EmbeddedSpec(seed=3).to_dict()) == EmbeddedSpec(seed=3)


# -- rendering -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64])
def test_render_shapes_and_value_ranges(size):
    labels = np.arange(N_CLASSES)
    images = render_images(labels, np.random.default_rng(0), size)
    assert images.shape == (N_CLASSES, size, size, 3) and images.dtype == np.uint8
    assert images.std() > 20  # real content, not a constant


def test_render_is_a_pure_function_of_the_generator():
    labels = np.arange(2 * N_CLASSES) % N_CLASSES
    first = render_images(labels, np.random.default_rng(7), 32)
    again = render_images(labels, np.random.default_rng(7), 32)
    other = render_images(labels, np.random.default_rng(8), 32)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def _canonical_masks(angle: float) -> np.ndarray:
    n = N_CLASSES
    return draw_masks(
        np.arange(n),
        64,
        centers=np.full((n, 2), 32.0),
        radii=np.full(n, 28.0),
        angles_deg=np.full(n, angle),
    )


def test_every_class_has_its_own_outline():
    # Compare every pair at opposite extreme rotations (a square turned by 40 degrees in all).
    first, second = _canonical_masks(-20.0) > 0.5, _canonical_masks(20.0) > 0.5
    for masks in (first, second):
        assert ((masks.sum(axis=(1, 2)) / 64**2) > 0.1).all()  # nothing degenerate
    inter = (first[:, None] & second[None]).sum(axis=(2, 3))
    union = (first[:, None] | second[None]).sum(axis=(2, 3))
    iou = inter / union
    np.fill_diagonal(iou, 0.0)
    assert iou.max() < 0.92, f"classes {np.unravel_index(iou.argmax(), iou.shape)} overlap"


def test_masks_are_antialiased_and_stay_inside():
    n = 4 * N_CLASSES
    size = 32
    labels = np.arange(n) % N_CLASSES
    radius = 0.47 * size
    slack = max(size / 2 - radius - 1, 0.0)  # the renderer's largest offset from the centre
    corners = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]], dtype=np.float32)
    centers = size / 2 + np.repeat(corners, N_CLASSES, axis=0) * slack
    masks = draw_masks(
        labels,
        size,
        centers=centers,
        radii=np.full(n, radius),
        angles_deg=np.tile([20.0, -20.0], n // 2),
    )
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    assert np.isin(masks, [0.0, 0.25, 0.5, 0.75, 1.0]).all()  # 2x2 area averaging
    assert ((masks > 0) & (masks < 1)).any()  # soft edges exist
    border = np.concatenate([masks[:, 0], masks[:, -1], masks[:, :, 0], masks[:, :, -1]], axis=1)
    assert border.max() == 0.0


def test_every_shape_fits_in_its_radius():
    masks = _canonical_masks(20.0)
    axis = np.arange(64) + 0.5
    distance = np.hypot(axis[None, :] - 32.0, axis[:, None] - 32.0)
    for label, mask in enumerate(masks):
        assert distance[mask > 0].max() <= 28.0 + 1.0, LEAVES[label]  # within a fine pixel


def _foreground(images: np.ndarray) -> np.ndarray:
    """Per-pixel colour distance to the border's median colour, scaled to [0, 1]."""
    x = images.astype(np.float32) / 255.0
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    distance = np.linalg.norm(x - np.median(border, axis=1)[:, None, None], axis=-1)
    distance /= distance.max(axis=(1, 2), keepdims=True)
    return distance.reshape(len(x), -1)


def test_nearest_class_mean_beats_chance_clearly():
    rng = np.random.default_rng(0)
    train_labels = rng.permutation(np.arange(400) % N_CLASSES)
    test_labels = rng.permutation(np.arange(200) % N_CLASSES)
    train = _foreground(render_images(train_labels, rng, 32))
    test = _foreground(render_images(test_labels, rng, 32))
    means = np.stack([train[train_labels == c].mean(axis=0) for c in range(N_CLASSES)])
    predicted = ((test[:, None] - means[None]) ** 2).sum(axis=-1).argmin(axis=1)
    assert (predicted == test_labels).mean() > 0.3  # chance is 0.05


# -- splits ----------------------------------------------------------------------------------


def test_labels_are_balanced_and_shuffled():
    labels = split_labels(SMALL, "train")
    assert np.bincount(labels, minlength=N_CLASSES).tolist() == [10] * N_CLASSES
    assert not np.array_equal(labels, np.sort(labels))
    odd = split_labels(EmbeddedSpec(n_train=205, n_val=0, n_test=0), "train")
    counts = np.bincount(odd, minlength=N_CLASSES)
    assert counts.max() - counts.min() == 1


def test_generation_is_deterministic_and_seeded():
    first = generate_splits(SMALL, workers=1)
    again = generate_splits(SMALL, workers=1)
    other = generate_splits(EmbeddedSpec(seed=1, n_train=200, n_val=40, n_test=40), workers=1)
    for split in SPLITS:
        assert np.array_equal(first[split][0], again[split][0])
        assert np.array_equal(first[split][1], again[split][1])
        assert not np.array_equal(first[split][0], other[split][0])
    assert not np.array_equal(first["val"][0], first["test"][0])


def test_generation_does_not_depend_on_the_process_count():
    spec = EmbeddedSpec(n_train=2 * CHUNK_SIZE + 60, n_val=20, n_test=20)
    serial = generate_splits(spec, workers=1)
    parallel = generate_splits(spec, workers=2)
    for split in SPLITS:
        assert np.array_equal(serial[split][0], parallel[split][0])
        assert np.array_equal(serial[split][1], parallel[split][1])


# -- cache -----------------------------------------------------------------------------------


def test_load_builds_once_then_reads_the_cache(monkeypatch):
    assert not is_cached(SMALL)
    dataset = load_embedded(SMALL)
    assert is_cached(SMALL) and dataset.cache_path == embedded_cache_path(SMALL)
    assert dataset.classes == LEAVES
    train = dataset.split("train")
    assert isinstance(train, ImageSplit) and len(train) == 200
    assert train.images.dtype == torch.uint8 and train.images.shape == (200, 3, 32, 32)
    assert train.labels.dtype == torch.int64 and train.labels.shape == (200,)
    floats = train.float_images()
    assert floats.dtype == torch.float32 and 0.0 <= floats.min() and floats.max() <= 1.0
    assert len(train.subset(5)) == 5 and torch.equal(train.subset(5).images, train.images[:5])

    fresh_images, fresh_labels, fresh_attributes = generate_splits(SMALL, ["train"], workers=1)[
        "train"
    ]
    assert np.array_equal(train.images.permute(0, 2, 3, 1).numpy(), fresh_images)
    assert np.array_equal(train.labels.numpy(), fresh_labels)
    assert np.array_equal(train.attributes.numpy(), fresh_attributes)

    mtimes = {p.name: p.stat().st_mtime_ns for p in dataset.cache_path.iterdir()}
    assert sorted(mtimes) == [f"{split}.parquet" for split in sorted(SPLITS)]

    def no_render(*args, **kwargs):
        raise AssertionError("the cache was rendered again")

    monkeypatch.setattr(embedded, "generate_splits", no_render)
    again = load_embedded(SMALL)
    for split in SPLITS:
        assert torch.equal(again.split(split).images, dataset.split(split).images)
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in again.cache_path.iterdir()}

    metadata = pq.read_schema(dataset.cache_path / "val.parquet").metadata
    stored = json.loads(metadata[b"raysearch.embedded"])
    assert stored["spec"] == SMALL.to_dict() and stored["split"] == "val"


def test_unknown_split_is_a_user_error():
    with pytest.raises(UserInputError, match="`split` must be"):
        load_embedded(SMALL).split("validation")


def test_interrupted_write_leaves_no_file(monkeypatch):
    real_write = pq.write_table

    def write_half_then_fail(table, where, **kwargs):
        real_write(table.slice(0, 10), where, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", write_half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        load_embedded(SMALL)
    folder = embedded_cache_path(SMALL)
    assert list(folder.iterdir()) == []
    monkeypatch.setattr(pq, "write_table", real_write)
    assert len(load_embedded(SMALL).split("test")) == 40


def test_concurrent_builders_both_end_with_a_valid_cache():
    def build(_):
        dataset = load_embedded(SMALL, workers=1)
        return [dataset.split(split).images for split in SPLITS]

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(build, range(2))
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    names = sorted(p.name for p in embedded_cache_path(SMALL).iterdir())
    assert names == [f"{split}.parquet" for split in sorted(SPLITS)]


def test_a_damaged_file_is_rendered_again():
    expected = load_embedded(SMALL).split("val").images
    path = embedded_cache_path(SMALL) / "val.parquet"
    path.write_bytes(b"not parquet")
    assert torch.equal(load_embedded(SMALL).split("val").images, expected)


# -- registry --------------------------------------------------------------------------------


def test_registry_serves_the_embedded_splits():
    assert available_datasets()[:8] == (
        "embedded",
        "embedded-world",
        "embedded-heldout-shapes",
        "embedded-colour",
        "embedded-size",
        "embedded-background",
        "cifar10",
        "cifar100",
    )
    assert set(available_datasets()) == set(DATASETS)  # every named dataset can be loaded
    val = load_split("embedded", "val", spec=SMALL)
    assert torch.equal(val.images, load_embedded(SMALL).split("val").images)


@pytest.mark.parametrize(
    ("name", "split", "field"),
    [("imagenet", "test", "dataset"), ("embedded", "dev", "split"), ("cifar10", "dev", "split")],
)
def test_registry_rejects_unknown_names(name, split, field):
    with pytest.raises(UserInputError, match=f"`{field}` must be"):
        load_split(name, split, spec=SMALL)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_torchvision_data_says_how_to_get_it(name, tmp_path):
    with pytest.raises(UserInputError) as caught:
        load_split(name, "test", root=tmp_path)
    message = str(caught.value)
    assert "`root` must be" in message and "download=True" in message and str(tmp_path) in message
    assert "\n" not in message
    assert not os.listdir(tmp_path)  # nothing was downloaded


def test_an_incomplete_torchvision_folder_is_reported_not_downloaded(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()  # present but without the batch files
    with pytest.raises(UserInputError, match="`root` must be a folder holding cifar10"):
        load_split("cifar10", "train", root=tmp_path)
    assert os.listdir(tmp_path) == ["cifar-10-batches-py"]


# -- the embedded world ------------------------------------------------------------------------


def test_every_embedded_dataset_labels_its_own_attribute():
    from trainables.data.embedded_spec import RECIPES, embedded_spec
    from trainables.data.embedded_taxonomy import ALL_SHAPES, ATTRIBUTES, HELD_OUT_SHAPES, UNNAMED

    for name, recipe in RECIPES.items():
        spec = embedded_spec(name, n_train=96, n_val=0, n_test=0)
        images, labels, attributes = generate_splits(spec, ["train"], workers=1)["train"]
        assert images.shape == (96, 32, 32, 3) and attributes.shape == (96, len(ATTRIBUTES))
        assert np.bincount(labels).max() - np.bincount(labels).min() <= 1  # balanced
        column = attributes[:, ATTRIBUTES.index(recipe.label)]
        if recipe.label == "shape":
            assert [ALL_SHAPES[s] for s in column] == [recipe.classes[i] for i in labels]
        else:
            assert np.array_equal(column, labels)
        assert set(attributes[:, 0]) <= set(recipe.shapes)
    # Fine-tuning images name no attribute; held-out shapes never appear in them.
    spec = embedded_spec("embedded", n_train=200, n_val=0, n_test=0)
    _, _, attributes = generate_splits(spec, ["train"], workers=1)["train"]
    assert (attributes[:, 1:] == UNNAMED).all() and attributes[:, 0].max() < len(LEAVES)
    assert not set(HELD_OUT_SHAPES) & set(LEAVES)


def test_named_attributes_are_visible_in_the_pixels():
    from trainables.data.embedded_taxonomy import COLOURS

    rng = np.random.default_rng(0)
    labels = np.zeros(64, dtype=np.int64)  # circles
    # A named colour is the shape's colour: the centre pixel of a large circle.
    red = render_images(labels, rng, colour=np.zeros(64), size_class=np.full(64, 2), noise_max=0)
    centre = red[:, 14:18, 14:18].reshape(64, -1, 3).mean(axis=1) / 255
    assert np.abs(centre - np.array(COLOURS["red"])).max() < 0.1
    # Small shapes cover less of the image than large ones.
    small = render_images(labels, rng, size_class=np.zeros(64), colour=np.full(64, 6), noise_max=0)
    large = render_images(
        labels, rng, size_class=np.full(64, 2), colour=np.full(64, 6), noise_max=0
    )
    white = lambda images: (images.min(axis=3) > 230).mean()  # noqa: E731
    assert white(small) < 0.5 * white(large)
    # A plain background has one tone; a checkered one has two, far apart.
    plain = render_images(
        labels, rng, background=np.zeros(64), size_class=np.zeros(64), noise_max=0
    )
    checkered = render_images(
        labels, rng, background=np.ones(64), size_class=np.zeros(64), noise_max=0
    )
    corner = lambda images: images[:, :6, :6].reshape(64, -1, 3).astype(float)  # noqa: E731
    assert np.median(corner(plain).std(axis=1).max(axis=1)) < 1.0  # (a shape may reach in)
    assert np.median(corner(checkered).std(axis=1).max(axis=1)) > 20
