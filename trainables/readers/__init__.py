"""Bounded readers for untrusted user files: text, YAML, JSON, CSV, images and weights.

Every file a user hands the project (configs, search spaces, class trees, model folders, images,
weights) is read here, with explicit bounds on what reading it may cost:

* text: at most :data:`MAX_TEXT_BYTES`, UTF-8, a leading byte order mark dropped (spreadsheets
  write one);
* YAML: at most :data:`MAX_YAML_NODES` nodes once aliases are expanded, nested at most
  :data:`MAX_DEPTH` levels, keys plain scalars, integers at most :data:`MAX_NUMBER_CHARS`
  characters; all checked on the composed node graph before any object is built;
* JSON: nested at most :data:`MAX_DEPTH` levels;
* CSV: fields of at most 128 KiB (the csv module's own limit, kept);
* images: at most :data:`MAX_IMAGE_BYTES` and :data:`MAX_IMAGE_PIXELS`, decoded completely;
* weights: ``.safetensors`` (header checked against the file before any tensor is read) or a
  torch zip archive read with ``weights_only=True``; pickle files are refused, never unpickled.

A problem raises :class:`BadFile` (a :class:`~trainables.errors.UserInputError`) with one line
that starts with the file's name (images and :func:`check_weights_file`: the setting's name),
except :func:`load_yaml`, which parses text that has no file of its own (an override) and
raises :class:`YamlRefused` or ``yaml.YAMLError`` for its caller to phrase.

One module per kind of file: :mod:`~trainables.readers.files` (paths, text, JSON, CSV),
:mod:`~trainables.readers.yaml_documents`, :mod:`~trainables.readers.images` and
:mod:`~trainables.readers.weights`; every public name imports from here.

Importing this package is cheap: torch, PIL and safetensors are imported on first use.
"""

from trainables.readers.files import (
    MAX_DEPTH,
    MAX_TEXT_BYTES,
    BadFile,
    bad_file,
    exists,
    expanded,
    is_file,
    load_json,
    parse_csv,
    read_bytes,
    read_json,
    read_text,
)
from trainables.readers.images import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, open_image
from trainables.readers.weights import (
    check_weights_file,
    load_safetensors,
    load_torch_file,
    load_weights_file,
)
from trainables.readers.yaml_documents import (
    MAX_NUMBER_CHARS,
    MAX_YAML_NODES,
    RepeatedKey,
    StrictLoader,
    YamlRefused,
    load_yaml,
    read_yaml,
    yaml_reason,
)

__all__ = [
    "RepeatedKey",
    "StrictLoader",
    "MAX_DEPTH",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_NUMBER_CHARS",
    "MAX_TEXT_BYTES",
    "MAX_YAML_NODES",
    "BadFile",
    "bad_file",
    "YamlRefused",
    "check_weights_file",
    "exists",
    "expanded",
    "is_file",
    "load_json",
    "load_safetensors",
    "load_torch_file",
    "load_weights_file",
    "load_yaml",
    "open_image",
    "parse_csv",
    "read_bytes",
    "read_json",
    "read_text",
    "read_yaml",
    "yaml_reason",
]
