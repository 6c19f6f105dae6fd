"""Class trees from WordNet 3.0 hypernyms, read through nltk without any download.

**Path rule.** From each leaf's synset, follow the *first* hypernym at every step up to the top
(``entity.n.01``). The candidates at a step are ``hypernyms() + instance_hypernyms()``, ordered by

1. the number of the tree's leaves below the candidate through any hypernym path, most first
   (``person.n.01`` goes to ``organism.n.01`` rather than ``causal_agent.n.01`` when the tree
   also holds animals);
2. the candidate's depth, the longest path to the top first;
3. the synset name;

and the first is taken. The order depends only on the synset and the leaf set, so each synset
has one parent and the union of the leaf paths is a tree. That tree is simplified by

1. **compressing single-child chains**: an internal node with exactly one child is removed and
   its child linked to its parent (such a node names the same set of leaves as its child);
2. the :class:`~trainables.hierarchy.ClassTree` rules: strip the trunk, align the levels on the
   root, pad shallow leaves with themselves, and cut to ``depth`` (the levels nearest the root).

**Ids and labels.** Leaves keep the ids they were given (the dataset's class names or WordNet
ids); internal nodes get WordNet ids such as ``n02083346``. Internal labels are the synset's first
lemma with underscores as spaces ("canine"). A leaf's label defaults to its name with underscores
as spaces, or to its synset's first lemma when it is given as an id or a synset name.

**Leaves** are WordNet noun ids (``n02119789``), synset names (``fox.n.01``) or lemma names
(``kit_fox`` or ``kit fox``; a name means its first, most frequent, noun sense). Ambiguous names
take a per-leaf override, e.g. ``{"seal": "seal.n.09"}`` for the animal.

**Where WordNet comes from** (never downloaded):

1. an explicit ``wordnet_dir`` (the CLI's ``--wordnet-dir``), then ``$RAYSEARCH_WORDNET_DIR``;
2. nltk's own ``wordnet`` corpus, when ``nltk.data.find("corpora/wordnet")`` finds it;
3. the Debian ``wordnet-base`` database at ``/usr/share/wordnet``.

A database folder (``data.noun``, ``index.noun``, ...) is laid out as an nltk corpus under
``cache_dir("nltk_data", "corpora", "wordnet")``: the files are copied (nltk refuses links that
leave its data roots) and a ``lexnames`` file, missing from Debian's package, is generated. The
cache's ``nltk_data`` folder is added to ``nltk.data.path`` so that nltk accepts it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainables.cache import cache_dir
from trainables.errors import UserInputError, must
from trainables.hierarchy.tree import ClassTree

__all__ = ["WORDNET_ENV", "build_wordnet_tree", "load_wordnet", "resolve_synset"]

WORDNET_ENV = "RAYSEARCH_WORDNET_DIR"
DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")

#: The 45 lexicographer files of WordNet 3.0, numbered 00..44 in this order.
LEXNAMES: tuple[str, ...] = tuple(
    """
    adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute
    noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group
    noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant
    noun.possession noun.process noun.quantity noun.relation noun.shape noun.state
    noun.substance noun.time verb.body verb.change verb.cognition verb.communication
    verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion
    verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl
    """.split()
)
#: WordNet's part-of-speech numbers, as the third column of ``lexnames`` gives them.
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

#: Database files nltk's reader opens; ``cntlist.rev`` is optional.
_REQUIRED_FILES = tuple(
    f"{kind}.{pos}" for pos in ("noun", "verb", "adj", "adv") for kind in ("data", "index")
) + tuple(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv"))
_OPTIONAL_FILES = ("cntlist.rev",)

_HOW_TO_GET = (
    "WordNet 3.0 is not available: install it with `apt-get install wordnet-base`, "
    "or run `python -m nltk.downloader wordnet` on a machine with internet access, "
    f"or pass --wordnet-dir (or set {WORDNET_ENV}) to a WordNet 3.0 database folder."
)

_WNID = re.compile(r"^n\d{8}$")
_SYNSET_NAME = re.compile(r"^.+\.[nvasr]\.\d+$")


# -- finding and loading WordNet -------------------------------------------------------------


def lexnames_text() -> str:
    """The ``lexnames`` file of WordNet 3.0 ("00\\tadj.all\\t3" ... "44\\tadj.ppl\\t3")."""
    return "".join(
        f"{i:02d}\t{name}\t{_POS_NUMBER[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES)
    )


def _check_database(folder: str | Path, field: str) -> Path:
    path = Path(folder).expanduser()
    missing = [name for name in _REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise must(
            field,
            f"a WordNet 3.0 database folder (with {', '.join(_REQUIRED_FILES[:2])}, ...; "
            f"{missing[0]} is missing)",
            str(path),
        )
    return path.resolve()


_STAMP = "raysearch-source.json"


def _own_nltk_wordnet() -> bool:
    """Whether nltk finds a ``wordnet`` corpus of its own (not a layout this module made)."""
    import nltk

    try:
        found = nltk.data.find("corpora/wordnet")
    except LookupError:
        return False
    location = Path(str(getattr(found, "path", found)))
    return not (location / _STAMP).is_file()


def _fingerprint(source: Path) -> dict[str, Any]:
    files = {}
    for name in _REQUIRED_FILES + _OPTIONAL_FILES:
        path = source / name
        if path.is_file():
            stat = path.stat()
            files[name] = [stat.st_size, stat.st_mtime_ns]
    return {"source": str(source), "files": files}


def layout_wordnet(source: str | Path) -> Path:
    """Lay out a WordNet 3.0 database folder as an nltk corpus in the cache; returns its root.

    Reused while the source files are unchanged. Files are written under temporary names and
    renamed into place, so concurrent workers never read a half-copied file.
    """
    source = _check_database(source, "wordnet_dir")
    target = cache_dir("nltk_data", "corpora", "wordnet")
    stamp = target / _STAMP
    wanted = _fingerprint(source)
    try:
        if json.loads(stamp.read_text()) == wanted:
            return target
    except (OSError, ValueError):
        pass
    suffix = f".{os.getpid()}.part"
    for name in wanted["files"]:
        partial = target / (name + suffix)
        shutil.copyfile(source / name, partial)
        os.replace(partial, target / name)
    partial = target / ("lexnames" + suffix)
    partial.write_text(lexnames_text())
    os.replace(partial, target / "lexnames")
    partial = target / (_STAMP + suffix)
    partial.write_text(json.dumps(wanted))
    os.replace(partial, stamp)
    return target


def _reader_class():
    from nltk.corpus.reader import WordNetCorpusReader

    class _DatabaseReader(WordNetCorpusReader):
        """nltk's reader over a bare WordNet 3.0 database.

        nltk maps every loaded WordNet onto its own 3.0 copy through ``index.sense``; this
        database *is* WordNet 3.0 (and Debian ships no ``index.sense``), so the map is the
        identity, which nltk expresses as None.
        """

        def map_wn(self, version: str = "wordnet"):
            return None

    return _DatabaseReader


@functools.lru_cache(maxsize=4)
def _open_reader(kind: str, root: str):
    import nltk

    with warnings.catch_warnings():
        # "The multilingual functions are not available": no Open Multilingual WordNet here.
        warnings.simplefilter("ignore")
        if kind == "nltk":
            from nltk.corpus import wordnet

            wordnet.ensure_loaded()
            return wordnet
        data_root = str(Path(root).parent.parent)
        if data_root not in nltk.data.path:
            nltk.data.path.append(data_root)
        return _reader_class()(root, None)


def _nltk_reader():
    """nltk's own WordNet reader, or None when that corpus cannot be read."""
    try:
        return _open_reader("nltk", "")
    except (OSError, LookupError, ValueError):
        return None


def load_wordnet(wordnet_dir: str | Path | None = None):
    """An nltk WordNet 3.0 reader, found as the module docstring says (cached per source)."""
    try:
        if wordnet_dir is not None:
            root = layout_wordnet(_check_database(wordnet_dir, "wordnet_dir"))
        elif os.environ.get(WORDNET_ENV):
            root = layout_wordnet(_check_database(os.environ[WORDNET_ENV], WORDNET_ENV))
        elif _own_nltk_wordnet() and (own := _nltk_reader()) is not None:
            return own
        elif all((DEFAULT_WORDNET_DIR / name).is_file() for name in _REQUIRED_FILES):
            root = layout_wordnet(DEFAULT_WORDNET_DIR)
        else:
            raise UserInputError(_HOW_TO_GET)
        return _open_reader("database", str(root))
    except OSError as error:
        raise UserInputError(f"WordNet could not be read ({error}). {_HOW_TO_GET}") from None


# -- synsets ---------------------------------------------------------------------------------


def resolve_synset(wordnet, text: str, *, leaf: str | None = None):
    """The noun synset of a WordNet id, a synset name or a lemma name (its first noun sense)."""
    from nltk.corpus.reader.wordnet import WordNetError

    who = f"leaf `{leaf}`" if leaf is not None and leaf != text else f"`{text}`"
    if not isinstance(text, str) or not text.strip():
        raise must("leaf", "a WordNet id or name", text)
    text = text.strip()
    if _WNID.match(text):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nltk warns before returning None
            synset = wordnet.synset_from_pos_and_offset("n", int(text[1:]))
        if synset is None:
            raise UserInputError(f"{who}: `{text}` is not a WordNet 3.0 noun id.")
        return synset
    if _SYNSET_NAME.match(text):
        try:
            synset = wordnet.synset(text)
        except (WordNetError, ValueError, LookupError):
            synset = None
        if synset is None or synset.pos() != "n":
            raise UserInputError(f"{who}: `{text}` is not a WordNet noun synset.")
        return synset
    synsets = wordnet.synsets(text.replace(" ", "_"), pos="n")
    if not synsets:
        raise UserInputError(
            f"{who}: `{text}` is not a WordNet noun; give an id such as n02119789 "
            "or a synset name such as fox.n.01."
        )
    return synsets[0]


def wordnet_id(synset) -> str:
    """The WordNet 3.0 id of a noun synset, as ImageNet writes it (``n02119789``)."""
    return f"{synset.pos()}{synset.offset():08d}"


def first_lemma(synset) -> str:
    """The synset's first lemma, underscores as spaces ("kit fox")."""
    return synset.lemmas()[0].name().replace("_", " ")


@functools.cache
def _max_depth(synset) -> int:
    candidates = _candidates(synset)
    return 1 + max(map(_max_depth, candidates)) if candidates else 0


def _candidates(synset) -> list:
    return synset.hypernyms() + synset.instance_hypernyms()


def leaf_coverage(leaf_synsets) -> dict[Any, int]:
    """How many of the given synsets lie below each synset, through any hypernym path."""
    coverage: dict[Any, int] = {}
    for synset in leaf_synsets:
        for ancestor in set(synset.closure(_candidates)):
            coverage[ancestor] = coverage.get(ancestor, 0) + 1
    return coverage


def first_hypernym(synset, coverage: Mapping[Any, int] | None = None):
    """The hypernym the path rule follows from ``synset`` (None at the top).

    The candidates (hypernyms + instance hypernyms) are ordered by the number of the tree's
    leaves below them (``coverage``, most first), then by depth (longest path to the top first),
    then by synset name; the first is taken.
    """
    candidates = _candidates(synset)
    if not candidates:
        return None
    coverage = coverage or {}
    return min(
        candidates,
        key=lambda candidate: (
            -coverage.get(candidate, 0),
            -_max_depth(candidate),
            candidate.name(),
        ),
    )


def _compress(table: dict[str, str], keep: set[str]) -> dict[str, str]:
    """Remove every internal node with exactly one child, linking its child to its parent."""
    child_count: dict[str, int] = {}
    for parent in table.values():
        child_count[parent] = child_count.get(parent, 0) + 1

    def kept_parent(node: str) -> str | None:
        parent = table.get(node)
        while parent is not None and parent not in keep and child_count[parent] == 1:
            parent = table.get(parent)
        return parent

    compressed = {}
    for node in table:
        if node in keep or child_count.get(node, 0) != 1:
            parent = kept_parent(node)
            if parent is not None:
                compressed[node] = parent
    return compressed


def build_wordnet_tree(
    name: str,
    leaves: Sequence[str],
    *,
    depth: int | None = None,
    synsets: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    wordnet_dir: str | Path | None = None,
) -> ClassTree:
    """A class tree from WordNet hypernym paths (rules in the module docstring).

    Args:
        name: the tree's name.
        leaves: WordNet ids or names, in dataset label order; they stay the leaf ids.
        depth: levels kept above the leaves (the ones nearest the root); None keeps all.
        synsets: per-leaf override ``{leaf: id or synset name}`` for ambiguous names.
        labels: display names of leaves (defaults: see the module docstring).
        wordnet_dir: a WordNet 3.0 database folder to read instead of the default sources.
    """
    leaves = tuple(leaves)
    overrides = dict(synsets or {})
    unknown = [leaf for leaf in overrides if leaf not in leaves]
    if unknown:
        raise must("synsets", f"keyed by leaves of tree `{name}`", unknown[0])
    if not leaves:
        raise must("leaves", "at least two classes", "<no leaves>")
    wordnet = load_wordnet(wordnet_dir)

    leaf_of: dict[Any, str] = {}
    given_labels = dict(labels or {})
    for leaf in leaves:
        spec = overrides.get(leaf, leaf)
        synset = resolve_synset(wordnet, spec, leaf=leaf)
        if synset in leaf_of:
            raise UserInputError(
                f"leaves `{leaf_of[synset]}` and `{leaf}` of tree `{name}` are the same "
                f"WordNet synset {synset.name()}."
            )
        leaf_of[synset] = leaf
        if leaf not in given_labels:
            by_name = not _WNID.match(leaf) and not _SYNSET_NAME.match(leaf)
            given_labels[leaf] = leaf.replace("_", " ") if by_name else first_lemma(synset)

    coverage = leaf_coverage(leaf_of)
    table: dict[str, str] = {}
    for synset, leaf in leaf_of.items():
        node_id, current = leaf, first_hypernym(synset, coverage)
        while current is not None:
            if current in leaf_of:
                raise UserInputError(
                    f"leaf `{leaf_of[current]}` is a WordNet ancestor of leaf `{leaf}` in tree "
                    f"`{name}`; a leaf must not contain another leaf."
                )
            parent_id = wordnet_id(current)
            if node_id in table:
                break  # the rest of the path is already in the table
            table[node_id] = parent_id
            given_labels.setdefault(parent_id, first_lemma(current))
            node_id, current = parent_id, first_hypernym(current, coverage)

    table = _compress(table, keep=set(leaves))
    return ClassTree.from_parents(name, table, leaves=leaves, labels=given_labels, depth=depth)
