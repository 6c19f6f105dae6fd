"""STL-10 and PCAM read lazily from their binary files: parity with torchvision's readers,
splits, fixed order, pickling into loader processes, and damaged copies."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from tests.array_datasets import write_pcam, write_stl10
from trainables.data.array_files import ARRAY_LAYOUTS, VAL_FRACTION, ArrayImages
from trainables.errors import UserInputError


def _pixels(dataset: ArrayImages, item: int) -> np.ndarray:
    return np.asarray(dataset.image(item))


def test_stl10_images_match_torchvision_decoding(tmp_path):
    import torchvision.datasets

    written = write_stl10(tmp_path)
    # torchvision's reader, without its md5 check (a tiny copy cannot match the archive's sums)
    reference = object.__new__(torchvision.datasets.STL10)
    reference.root, reference.base_folder = str(tmp_path), "stl10_binary"
    ref_images, ref_labels = reference._STL10__loadfile("test_X.bin", "test_y.bin")
    dataset = ArrayImages("stl10", tmp_path, "test", 96)
    assert len(dataset) == len(ref_labels) == 20
    for item in range(len(dataset)):
        row = dataset.rows[item]
        assert np.array_equal(_pixels(dataset, item), ref_images[row].transpose(1, 2, 0))
        assert np.array_equal(_pixels(dataset, item), written["test"][0][row])
        assert dataset.labels[item] == ref_labels[row]


def test_stl10_val_is_held_out_of_train(tmp_path):
    write_stl10(tmp_path, train_per_class=5)
    splits = {split: ArrayImages("stl10", tmp_path, split, 96) for split in ("train", "val")}
    train, val = (set(splits[split].rows.tolist()) for split in ("train", "val"))
    assert not train & val
    assert train | val == set(range(50))
    assert len(val) == round(50 * VAL_FRACTION)


def test_pcam_matches_torchvision(tmp_path):
    import torchvision.datasets

    write_pcam(tmp_path)
    for split, ours in (("test", "test"), ("val", "val"), ("train", "train")):
        reference = torchvision.datasets.PCAM(str(tmp_path), split=split, download=False)
        dataset = ArrayImages("pcam", tmp_path, ours, 96)
        assert len(dataset) == len(reference)
        for item in range(len(dataset)):
            image, label = reference[int(dataset.rows[item])]
            assert np.array_equal(_pixels(dataset, item), np.asarray(image))
            assert dataset.labels[item] == label


def test_items_are_the_evaluation_transform_at_the_model_size(tmp_path):
    write_pcam(tmp_path)
    dataset = ArrayImages("pcam", tmp_path, "test", 32)
    image, label = dataset[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    assert label.dtype == torch.int64


def test_order_is_fixed_and_mixes_classes(tmp_path):
    write_stl10(tmp_path, test_per_class=4)
    first = ArrayImages("stl10", tmp_path, "test", 96)
    again = ArrayImages("stl10", tmp_path, "test", 96)
    assert np.array_equal(first.rows, again.rows)
    assert len(set(first.labels[:20].tolist())) > 5


def test_a_split_pickles_without_its_open_file(tmp_path):
    write_pcam(tmp_path)
    dataset = ArrayImages("pcam", tmp_path, "test", 96)
    before = _pixels(dataset, 1)  # opens the HDF5 file
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy._images is None
    assert np.array_equal(_pixels(copy, 1), before)


def test_training_items_are_augmented_per_epoch(tmp_path):
    write_stl10(tmp_path)
    dataset = ArrayImages("stl10", tmp_path, "train", 64, train=True, seed=3)
    first = dataset[0][0]
    assert torch.equal(first, dataset[0][0])
    dataset.set_epoch(1)
    assert not torch.equal(first, dataset[0][0])


@pytest.mark.parametrize("name", sorted(ARRAY_LAYOUTS))
def test_a_missing_copy_names_its_folder_and_how_to_fetch_it(tmp_path, name):
    with pytest.raises(UserInputError, match=f"{ARRAY_LAYOUTS[name].folder}/.*download=True"):
        ArrayImages(name, tmp_path, "test", 96)


def test_a_truncated_stl10_file_is_one_line(tmp_path):
    write_stl10(tmp_path)
    images = tmp_path / "stl10_binary" / "test_X.bin"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(UserInputError, match="test_X.bin.*incomplete"):
        ArrayImages("stl10", tmp_path, "test", 96)


def test_pcam_labels_and_images_must_agree(tmp_path):
    import h5py

    write_pcam(tmp_path)
    with h5py.File(tmp_path / "pcam" / "camelyonpatch_level_2_split_test_y.h5", "w") as file:
        file.create_dataset("y", data=np.zeros((3, 1, 1, 1), dtype=np.uint8))
    with pytest.raises(UserInputError, match="one per label"):
        ArrayImages("pcam", tmp_path, "test", 96)


def test_pcam_file_that_is_not_hdf5_is_one_line(tmp_path):
    write_pcam(tmp_path)
    (tmp_path / "pcam" / "camelyonpatch_level_2_split_test_y.h5").write_text("not hdf5")
    with pytest.raises(UserInputError, match="HDF5 file with a dataset `y`"):
        ArrayImages("pcam", tmp_path, "test", 96)


def test_unknown_split_is_refused(tmp_path):
    with pytest.raises(UserInputError, match="`split` must be"):
        ArrayImages("stl10", tmp_path, "holdout", 96)
