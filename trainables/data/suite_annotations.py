"""The annotation files of the zero-shot suite's datasets, read as torchvision 0.29 reads them
(torchvision itself is not imported): Food-101's JSON lists, the text lists of Oxford-IIIT Pet,
DTD, FGVC-Aircraft and SUN397, and the MATLAB files of Flowers-102 and Stanford Cars (read with
scipy, imported on first use).

Each reader takes the dataset's folder (``base``) and returns its class ids, or one official
list ``(files, labels)`` of it ("train", "val" or "test"); :mod:`trainables.data.suite_layouts`
turns them into splits. A file or folder that is not there raises :class:`MissingFiles`, which
the caller completes with how to fetch the dataset; a malformed line, a class that is not one of
the dataset's, or a listed image that is not on disk is one line naming the file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from trainables.errors import UserInputError
from trainables.readers import read_bytes, read_json, read_text

#: One official list of a dataset: image paths and their labels (indices into its classes).
Listed = tuple[list[str], list[int]]


class MissingFiles(UserInputError):
    """Part of a dataset is not on disk; the message says what, and where."""


# -- shared checks ------------------------------------------------------------------------------


def required(path: Path, *, folder: bool = False) -> Path:
    """``path``, or :class:`MissingFiles` when it is not an existing file (or folder)."""
    if not (path.is_dir() if folder else path.is_file()):
        raise MissingFiles(f"'{path}{'/' if folder else ''}' is missing")
    return path


def numbered_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of a text file that are not blank, stripped, with their numbers from 1."""
    text = read_text(required(path))
    return [
        (number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()
    ]


def malformed(path: Path, number: int, expected: str, line: str) -> UserInputError:
    return UserInputError(f"{path}: line {number} must be {expected}, but got {line[:80]!r}.")


def label_in(label_of: dict[str, int], name: str, path: Path, where: str, source: str) -> int:
    """The label of class ``name``, which ``where`` (a line) of ``path`` names; one line when it
    is not a key of ``label_of``, the classes of ``source``."""
    if name not in label_of:
        raise UserInputError(
            f"{path}: {where} names the class {name!r}, which is not one of the {len(label_of)} "
            f"classes of {source}."
        )
    return label_of[name]


def labels_of(classes: Sequence[str]) -> dict[str, int]:
    return {name: label for label, name in enumerate(classes)}


def distinct(names: Sequence[str], path: Path) -> tuple[str, ...]:
    """``names`` as class ids; one line when one is empty or repeated (labels would be
    ambiguous)."""
    seen: set[str] = set()
    for name in names:
        if not name or name in seen:
            problem = "an empty class name" if not name else f"the class {name!r} twice"
            raise UserInputError(
                f"{path}: the class list must name each class once, but has {problem}."
            )
        seen.add(name)
    return tuple(names)


def path_parts(text: str, count: int | None = None) -> list[str] | None:
    """The ``/``-separated parts of a relative path an annotation gives (``count`` of them, when
    given), or None when it has an empty part or a ``.``/``..`` that would leave its folder."""
    parts = text.split("/")
    if (count is not None and len(parts) != count) or any(p in ("", ".", "..") for p in parts):
        return None
    return parts


def _names_in(folder: str) -> frozenset[str]:
    try:
        return frozenset(os.listdir(folder))
    except OSError:  # a missing folder: all its listed images are missing
        return frozenset()


def check_present(files: Iterable[str], listed_in: Path) -> None:
    """:class:`MissingFiles` when an image that ``listed_in`` names is not on disk; each folder
    is listed once (a stat per image would make the big datasets slow to index)."""
    by_folder: dict[str, list[str]] = {}
    for file in files:
        folder, name = os.path.split(file)
        by_folder.setdefault(folder, []).append(name)
    missing = [
        os.path.join(folder, name)
        for folder, names in by_folder.items()
        for name in set(names) - _names_in(folder)
    ]
    if missing:
        raise MissingFiles(
            f"{len(missing):,} image(s) listed in '{listed_in}' are missing (one: '{min(missing)}')"
        )


def _as_int(value) -> int | None:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)  # MATLAB stores numbers as doubles unless told otherwise
    return None


def load_mat(path: Path, key: str) -> np.ndarray:
    """Variable ``key`` of the MATLAB file ``path`` (squeezed, as torchvision loads it), as an
    array of at least one dimension."""
    from scipy.io import loadmat

    data = read_bytes(required(path))
    try:
        variables = loadmat(io.BytesIO(data), squeeze_me=True)
    # scipy raises many types for a damaged file (ValueError, MatReadError, zlib and struct
    # errors, EOFError); each is the same user mistake.
    except Exception as error:
        reason = " ".join(str(error).split())[:200]
        raise UserInputError(f"{path}: not a readable MATLAB file ({reason}).") from None
    if key not in variables:
        raise UserInputError(
            f"{path}: the MATLAB file must hold `{key}`, but has no such variable."
        )
    return np.atleast_1d(variables[key])


def mat_integers(path: Path, key: str) -> list[int]:
    """Variable ``key`` of ``path`` as a vector of integers."""
    values = load_mat(path, key)
    numbers = [_as_int(value) for value in values.tolist()] if values.ndim == 1 else [None]
    if None in numbers:
        raise UserInputError(
            f"{path}: `{key}` must be a vector of integers, but is {values.dtype} {values.shape}."
        )
    return numbers


# -- Food-101: food-101/images/<class>/<id>.jpg, meta/{train,test}.json -------------------------


def _food101_meta(base: Path, split: str) -> tuple[Path, dict]:
    path = required(base / "meta" / f"{split}.json")
    meta = read_json(path)
    if not isinstance(meta, dict) or not all(
        isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in meta.values()
    ):
        raise UserInputError(f"{path}: must map every class to a list of `<class>/<id>` strings.")
    return path, meta


def food101_classes(base: Path) -> tuple[str, ...]:
    """The keys of ``meta/train.json``, sorted (torchvision's labels)."""
    path, meta = _food101_meta(base, "train")
    return distinct(sorted(meta), path)


def food101_list(base: Path, classes: tuple[str, ...], split: str) -> Listed:
    path, meta = _food101_meta(base, split)
    images = str(required(base / "images", folder=True))
    files, labels, label_of = [], [], labels_of(classes)
    for name, ids in meta.items():
        label = label_in(label_of, name, path, "a key", "meta/train.json")
        for image_id in ids:
            parts = path_parts(image_id, 2)
            if parts is None:
                raise UserInputError(
                    f"{path}: the images of {name!r} must be `<class>/<id>`, but one is "
                    f"{image_id[:80]!r}."
                )
            files.append(os.path.join(images, parts[0], f"{parts[1]}.jpg"))
            labels.append(label)
    check_present(files, path)
    return files, labels


# -- Oxford-IIIT Pet: oxford-iiit-pet/images/<id>.jpg, annotations/{trainval,test}.txt ----------

_PETS_LINE = "`<image id> <class id> <species> <breed id>` with a class id from 1"


def _pets_lines(path: Path) -> list[tuple[int, str, int]]:
    """``(line number, image id, label from 0)`` of each line of a Pet annotation list."""
    rows = []
    for number, line in numbered_lines(path):
        fields = line.split()
        numeric = len(fields) == 4 and fields[1].isascii() and fields[1].isdigit()
        label = int(fields[1]) if numeric else None
        if label is None or label < 1 or path_parts(fields[0], 1) is None:
            raise malformed(path, number, _PETS_LINE, line)
        rows.append((number, fields[0], label - 1))
    return rows


def _breed_name(image_id: str) -> str:
    """ "american_pit_bull_terrier_12" -> "American Pit Bull Terrier" (torchvision's names)."""
    return " ".join(part.title() for part in image_id.rsplit("_", 1)[0].split("_"))


def pets_classes(base: Path) -> tuple[str, ...]:
    """The breeds of ``annotations/trainval.txt``, named from their image ids, by class id."""
    path = base / "annotations" / "trainval.txt"
    breeds: dict[int, str] = {}
    for number, image_id, label in _pets_lines(path):
        if breeds.setdefault(label, _breed_name(image_id)) != _breed_name(image_id):
            raise UserInputError(
                f"{path}: line {number} gives class id {label + 1} to {image_id!r}, but an "
                f"earlier line gives it to the breed {breeds[label]!r}."
            )
    absent = sorted(set(range(max(breeds, default=-1) + 1)) - set(breeds))
    if absent or not breeds:
        raise UserInputError(
            f"{path}: must list images of every class id from 1 to the largest, but has none "
            f"of class {absent[0] + 1 if absent else 1}."
        )
    return distinct([breeds[label] for label in range(len(breeds))], path)


def pets_list(base: Path, classes: tuple[str, ...], split: str) -> Listed:
    path = base / "annotations" / ("trainval.txt" if split == "train" else "test.txt")
    images = str(required(base / "images", folder=True))
    files, labels = [], []
    for number, image_id, label in _pets_lines(path):
        if label >= len(classes) or classes[label] != _breed_name(image_id):
            raise UserInputError(
                f"{path}: line {number} must give {image_id!r} the class id of its breed in "
                f"trainval.txt (one of {len(classes)}), but gives {label + 1}."
            )
        files.append(os.path.join(images, f"{image_id}.jpg"))
        labels.append(label)
    check_present(files, path)
    return files, labels


# -- Flowers-102: flowers-102/jpg/image_<id>.jpg, imagelabels.mat, setid.mat --------------------

_FLOWERS_SETS = {"train": "trnid", "val": "valid", "test": "tstid"}


def flowers_list(base: Path, classes: tuple[str, ...], split: str) -> Listed:
    images = str(required(base / "jpg", folder=True))
    labels_path, sets_path = base / "imagelabels.mat", base / "setid.mat"
    all_labels = mat_integers(labels_path, "labels")  # of image ids 1, 2, ...; labels from 1
    ids = mat_integers(sets_path, _FLOWERS_SETS[split])
    files, labels = [], []
    for image_id in ids:
        if not 1 <= image_id <= len(all_labels):
            raise UserInputError(
                f"{sets_path}: `{_FLOWERS_SETS[split]}` must hold image ids from 1 to "
                f"{len(all_labels)} (the images of imagelabels.mat), but holds {image_id}."
            )
        label = all_labels[image_id - 1]
        if not 1 <= label <= len(classes):
            raise UserInputError(
                f"{labels_path}: `labels` must be class ids from 1 to {len(classes)}, but "
                f"image {image_id} has {label}."
            )
        files.append(os.path.join(images, f"image_{image_id:05d}.jpg"))
        labels.append(label - 1)
    check_present(files, sets_path)
    return files, labels


# -- DTD: dtd/dtd/images/<class>/<image>, labels/{train,val,test}1.txt --------------------------


def sorted_folders(folder: Path) -> tuple[str, ...]:
    """The names of the folders in ``folder``, sorted; :class:`MissingFiles` when it has none."""
    try:
        with os.scandir(required(folder, folder=True)) as entries:
            names = sorted(entry.name for entry in entries if entry.is_dir())
    except OSError as error:
        raise UserInputError(f"{folder}: the folder cannot be read ({error.strerror}).") from None
    if not names:
        raise MissingFiles(f"'{folder}/' holds no class folder")
    return tuple(names)


def dtd_classes(base: Path) -> tuple[str, ...]:
    return sorted_folders(base / "images")


def dtd_list(base: Path, classes: tuple[str, ...], split: str) -> Listed:
    path = base / "labels" / f"{split}1.txt"  # partition 1, torchvision's default
    images = str(base / "images")
    files, labels, label_of = [], [], labels_of(classes)
    for number, line in numbered_lines(path):
        parts = path_parts(line, 2)
        if parts is None:
            raise malformed(path, number, "`<class>/<image file>`", line)
        labels.append(label_in(label_of, parts[0], path, f"line {number}", "images/"))
        files.append(os.path.join(images, *parts))
    check_present(files, path)
    return files, labels


# -- FGVC-Aircraft: fgvc-aircraft-2013b/data/images/<id>.jpg, variants.txt, lists ---------------


def fgvc_classes(base: Path) -> tuple[str, ...]:
    """The lines of ``data/variants.txt``, in file order."""
    path = base / "data" / "variants.txt"
    return distinct([line for _, line in numbered_lines(path)], path)


def fgvc_list(base: Path, classes: tuple[str, ...], split: str) -> Listed:
    path = base / "data" / f"images_variant_{split}.txt"
    images = str(required(base / "data" / "images", folder=True))
    files, labels, label_of = [], [], labels_of(classes)
    for number, line in numbered_lines(path):
        image_id, _, variant = line.partition(" ")  # a variant may hold spaces ("Cessna 172")
        if not variant or path_parts(image_id, 1) is None:
            raise malformed(path, number, "`<image id> <variant>`", line)
        labels.append(label_in(label_of, variant, path, f"line {number}", "data/variants.txt"))
        files.append(os.path.join(images, f"{image_id}.jpg"))
    check_present(files, path)
    return files, labels


# -- Stanford Cars: stanford_cars/cars_{train,test}/, devkit/*.mat, cars_test_annos_withlabels.mat


def cars_classes(base: Path) -> tuple[str, ...]:
    """``class_names`` of ``devkit/cars_meta.mat``, in order (labels are 1-based)."""
    path = base / "devkit" / "cars_meta.mat"
    names = load_mat(path, "class_names").tolist()
    if not all(isinstance(name, str) for name in names):
        raise UserInputError(f"{path}: `class_names` must be a list of strings.")
    return distinct(names, path)


def cars_list(base: Path, classes: tuple[str, ...], split: str) -> Listed:
    if split == "train":
        path, images = base / "devkit" / "cars_train_annos.mat", base / "cars_train"
    else:  # torchvision reads the labelled test annotations beside devkit/, not in it
        path, images = base / "cars_test_annos_withlabels.mat", base / "cars_test"
    images = str(required(images, folder=True))
    annotations = load_mat(path, "annotations")
    if not {"fname", "class"} <= set(annotations.dtype.names or ()):
        raise UserInputError(f"{path}: `annotations` must be a struct array with fname and class.")
    files, labels = [], []
    for number, annotation in enumerate(annotations, 1):
        name, label = annotation["fname"], _as_int(annotation["class"])
        if not isinstance(name, str) or path_parts(name, 1) is None or label is None or label < 1:
            raise UserInputError(
                f"{path}: annotation {number} must have a file name (fname) and a class id from "
                f"1, but has fname={name!r}, class={annotation['class']!r}."
            )
        if label > len(classes):
            raise UserInputError(
                f"{path}: annotation {number} has the class id {label}, but "
                f"devkit/cars_meta.mat names {len(classes)} classes."
            )
        files.append(os.path.join(images, name))
        labels.append(label - 1)
    check_present(files, path)
    return files, labels


# -- SUN397: SUN397/<letter>/<class>/sun_<id>.jpg, ClassName.txt, Training_01.txt, Testing_01.txt


def is_sun397_image(name: str) -> bool:
    return name.startswith("sun_") and name.endswith(".jpg")  # torchvision's glob, sun_*.jpg


def sun397_class_folders(base: Path) -> dict[str, Path]:
    """``{class id: its folder}`` in label order: the lines of ``ClassName.txt``
    (``/a/apartment_building/outdoor``) less their letter folder, as torchvision names them."""
    path = base / "ClassName.txt"
    names, folders = [], []
    for number, line in numbered_lines(path):
        parts = path_parts(line[1:]) if line.startswith("/") else None
        if parts is None or len(parts) < 2 or len(parts[0]) != 1:
            raise malformed(path, number, "`/<letter>/<class>`", line)
        names.append("/".join(parts[1:]))
        folders.append(base.joinpath(*parts))
    return dict(zip(distinct(names, path), folders, strict=True))


def sun397_list(base: Path, classes: tuple[str, ...], split: str) -> Listed | None:
    """Official partition 1 (``Training_01.txt`` as "train", ``Testing_01.txt`` as "test"), or
    None when ``base`` holds neither (torchvision does not fetch them)."""
    lists = {"train": base / "Training_01.txt", "test": base / "Testing_01.txt"}
    if not any(path.is_file() for path in lists.values()):
        return None
    path, folder = lists[split], str(base)
    files, labels, label_of = [], [], labels_of(classes)
    for number, line in numbered_lines(required(path)):
        parts = path_parts(line[1:]) if line.startswith("/") else None
        if parts is None or len(parts) < 3 or not is_sun397_image(parts[-1]):
            raise malformed(path, number, "`/<letter>/<class>/sun_<id>.jpg`", line)
        name = "/".join(parts[1:-1])
        labels.append(label_in(label_of, name, path, f"line {number}", "ClassName.txt"))
        files.append(os.path.join(folder, *parts))
    check_present(files, path)
    return files, labels
