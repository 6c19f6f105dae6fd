"""The experiment config's schema: the driver-side sections (data, model, scaling, checkpoint,
MLflow) and :class:`ExperimentConfig`, which holds them beside the science's own settings.

Each section checks its own values when built; :mod:`raysearch.config.building` builds them from
YAML, and :mod:`raysearch.config` describes the layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.errors import must
from trainables.names import RULE as FOLDER_NAME_RULE
from trainables.names import is_folder_name
from trainables.readers import expanded, is_file

if TYPE_CHECKING:
    from trainables.evaluate import AttackSettings
    from trainables.methods import MethodSettings
    from trainables.training import OptimSettings

DEFAULT_METHOD = "hrz-forest"
#: The class trees a dataset uses when ``data.trees`` is null.
DEFAULT_TREES: dict[str, str | tuple[str, ...]] = {
    "embedded": "embedded",
    "cifar10": "cifar10-wordnet",
    "cifar100": ("cifar100-wordnet", "cifar100-coarse"),
    "imagenet1k": "imagenet1k-wordnet",
}
#: The zero-shot suite a dataset's jobs evaluate when ``data.zeroshot_suite`` is "auto".
DEFAULT_SUITES: dict[str, str] = {"embedded": "embedded-zeroshot"}

#: Fields of MethodSettings written as top-level sections of their own.
HOISTED = ("head", "loss", "attack")
#: Per section: fields of its dataclass that the YAML does not set, and where they are set.
HIDDEN: dict[str, dict[str, str]] = {
    "method": {key: f"set in the top-level section `{key}`" for key in HOISTED},
    "optim": {"seed": "set as the top-level `seed` (one seed for the whole run)"},
    "evaluation": {
        "seed": "set as the top-level `seed` (one seed for the whole run)",
        "samples": "set as `data.eval_samples`",
    },
}


def shown(value: Any) -> Any:
    """A value as the user wrote it (lists, not tuples)."""
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class DataSettings:
    """What the model is fine-tuned and evaluated on.

    Attributes:
        dataset: ``"embedded"`` (the procedurally generated default), ``"cifar10"`` or
            ``"cifar100"`` (torchvision files under ``root``; never downloaded), or
            ``"imagenet1k"`` (an image folder: ``train/<wnid>/``, ``val/<wnid>/``), or
            ``"imagefolder"`` (any image folder in that layout; its classes are its folders,
            ``root`` and ``trees`` required).
        root: folder holding the torchvision datasets, or the image folder itself; null = the
            cache folder (an image folder in its subfolder named after the dataset). Ignored by
            the embedded dataset.
        trees: the class trees: a shipped name (``embedded``, ``cifar10-wordnet``, ...), one tree
            of a shipped forest (``embedded/form``), a tree file, or a list of these (joined into
            one forest). Null = the dataset's default (:data:`DEFAULT_TREES`).
        train_size: training images used; null = the whole training split.
        eval_samples: images evaluated per split (clean and under attack): the validation
            split every epoch (what selection reads), the test split once at the end (reported
            as ``test/...``). Default 1000.
        zeroshot_suite: the zero-shot suite evaluated after the last epoch (``zeroshot_clean``,
            ``zeroshot_robust``, per dataset ``zeroshot/<dataset>/...``): a shipped suite, a
            suite YAML file (:func:`trainables.suites.load_suite`; readable on every worker),
            "auto" = the dataset's default (:data:`DEFAULT_SUITES`), or null = none.
        zeroshot_samples: images per suite dataset and split. Default 200.
        zeroshot_every_epoch: evaluate the suite after every epoch, not only the last.
        loader_workers: processes decoding training images for each training worker; null =
            none for a split held in memory at the model's size, else up to 4 (one fewer than
            the worker's CPUs).
    """

    dataset: str = "embedded"
    root: str | None = None
    trees: str | tuple[str, ...] | None = None
    train_size: int | None = None
    eval_samples: int = 1000
    zeroshot_suite: str | None = "auto"
    zeroshot_samples: int = 200
    zeroshot_every_epoch: bool = False
    loader_workers: int | None = None

    def __post_init__(self) -> None:
        from trainables.data.registry import available_datasets

        datasets = available_datasets()
        if self.dataset not in datasets:
            raise must("data.dataset", f"one of {list(datasets)}", self.dataset)
        if self.root is not None and not self.root:
            raise must("data.root", "a folder or null", self.root)
        if self.dataset == "imagefolder" and self.root is None:
            raise must("data.root", "the image folder of dataset 'imagefolder'", None)
        if self.trees is None:
            if self.dataset not in DEFAULT_TREES:
                raise must("data.trees", f"given for dataset {self.dataset!r}", None)
            object.__setattr__(self, "trees", DEFAULT_TREES[self.dataset])
        sources = (self.trees,) if isinstance(self.trees, str) else self.trees
        if not sources or not all(sources):
            raise must(
                "data.trees", "a shipped tree name or a non-empty list of trees", shown(self.trees)
            )
        if self.train_size is not None and self.train_size < 1:
            raise must("data.train_size", ">= 1 or null", self.train_size)
        if self.eval_samples < 1:
            raise must("data.eval_samples", ">= 1", self.eval_samples)
        from trainables.suites import SUITE_SUFFIXES, SUITES, load_suite

        if self.zeroshot_suite == "auto":
            object.__setattr__(self, "zeroshot_suite", DEFAULT_SUITES.get(self.dataset))
        if self.zeroshot_suite is not None and self.zeroshot_suite not in SUITES:
            suite_file = expanded(self.zeroshot_suite)
            if suite_file.suffix.lower() not in SUITE_SUFFIXES or not is_file(suite_file):
                raise must(
                    "data.zeroshot_suite",
                    f"one of {['auto', *SUITES]}, a suite YAML file or null",
                    self.zeroshot_suite,
                )
            load_suite(suite_file)  # a mistake in the file surfaces now, not after training
        if self.zeroshot_samples < 1:
            raise must("data.zeroshot_samples", ">= 1", self.zeroshot_samples)
        if self.loader_workers is not None and self.loader_workers < 0:
            raise must("data.loader_workers", ">= 0 or null", self.loader_workers)


@dataclass(frozen=True)
class ModelSettings:
    """The CLIP model fine-tuned.

    Attributes:
        name: ``"embedded"`` (default: the tiny base model pretrained on the embedded dataset and
            cached) or an open_clip architecture such as ``ViT-B-32``.
        pretrained: an open_clip pretrained tag (``openai``), a local weights file, or null
            (the cached base for ``embedded``; random weights otherwise).
        grad_checkpointing: recompute the image tower's activations in the backward pass
            instead of keeping them (ViT image towers): less memory for a larger batch, about
            a third more compute per step. Default false.
    """

    name: str = "embedded"
    pretrained: str | None = None
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise must("model.name", "'embedded' or an open_clip model name", self.name)
        if self.pretrained is not None and not self.pretrained:
            raise must("model.pretrained", "a pretrained tag, a weights file or null", "")
        if self.grad_checkpointing and self.name == "embedded":
            raise must("model.grad_checkpointing", "false for the embedded model (a ResNet)", True)


@dataclass(frozen=True)
class ScalingSettings:
    """The Ray Train workers of one trial.

    Attributes:
        workers: data-parallel workers (each gets ``optim.batch_size // workers`` images). >= 1.
        cpus_per_worker: CPUs reserved per worker, > 0 (fractions allowed).
        gpus_per_worker: GPUs per worker, >= 0 (fractions allowed); 0 trains on the CPU.
        in_process: a search trial with one worker trains in the trial's own process, without
            a Ray Train controller and worker group to start (seconds less per trial; Tune
            restarts a failed trial, which resumes from its last checkpoint). False: a Ray Train
            worker group, which restarts a failed worker without restarting the trial. Jobs of
            ``raysearch train`` and trials with several workers always use a worker group.
    """

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    in_process: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise must("scaling.workers", ">= 1", self.workers)
        if not self.cpus_per_worker > 0:
            raise must("scaling.cpus_per_worker", "> 0", self.cpus_per_worker)
        if not self.gpus_per_worker >= 0:
            raise must("scaling.gpus_per_worker", ">= 0", self.gpus_per_worker)

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


@dataclass(frozen=True)
class CheckpointSettings:
    """Where trials keep their checkpoints, and how failures are retried.

    Attributes:
        storage_path: a local folder (relative to the working directory) or a URI such as
            ``s3://bucket/runs``; on a cluster, storage every node can reach.
        keep: checkpoints kept per trial (the latest ones), >= 1.
        max_failures: times a failed trial is restarted from its last checkpoint, >= 0.
    """

    storage_path: str = "./ray_results"
    keep: int = 2
    max_failures: int = 2

    def __post_init__(self) -> None:
        if not self.storage_path:
            raise must("checkpoint.storage_path", "a folder or a URI", self.storage_path)
        if self.keep < 1:
            raise must("checkpoint.keep", ">= 1", self.keep)
        if self.max_failures < 0:
            raise must("checkpoint.max_failures", ">= 0", self.max_failures)

    def resolved_storage_path(self) -> str:
        """The storage path as Ray needs it: URIs as given, local folders made absolute."""
        if "://" in self.storage_path:
            return self.storage_path
        return str(Path(self.storage_path).expanduser().resolve())


@dataclass(frozen=True)
class MlflowSettings:
    """Where every trial is logged.

    Attributes:
        tracking_uri: the MLflow tracking server or store; null = ``$MLFLOW_TRACKING_URI``, else
            ``sqlite:///mlflow.db`` in the working directory.
        experiment: the MLflow experiment of the search.
    """

    tracking_uri: str | None = None
    experiment: str = "raysearch"

    def __post_init__(self) -> None:
        if self.tracking_uri is not None and not self.tracking_uri:
            raise must("mlflow.tracking_uri", "a tracking URI or null", "")
        if not self.experiment:
            raise must("mlflow.experiment", "a non-empty name", self.experiment)

    def resolved_tracking_uri(self) -> str:
        """The URI to use now; the default store's path is absolute (trials run elsewhere)."""
        if self.tracking_uri:
            return self.tracking_uri
        from_env = os.environ.get("MLFLOW_TRACKING_URI")
        if from_env:
            return from_env
        return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _default_method() -> MethodSettings:
    from trainables.methods import method_settings

    return method_settings(DEFAULT_METHOD)


def _default_optim() -> OptimSettings:
    from trainables.training import OptimSettings

    return OptimSettings()


def _default_evaluation() -> AttackSettings:
    from trainables.evaluate import AttackSettings

    return AttackSettings()


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: a fine-tuning method, its data and model, and where the run goes.

    Attributes:
        name: the job name (1-64 characters from ``A-Z a-z 0-9 . _ -``); null = derived from
            the content by :func:`job_name`.
        seed: seeds the shuffling, the training attacks and the evaluation attack (it is copied
            into ``optim.seed`` and ``evaluation.seed``). >= 0.
        method: the method with its head, loss, training attack and prompt templates.
        optim: optimiser, schedule, batch and epochs.
        evaluation: the PGD attack of the robust evaluation.
        data, model, scaling, checkpoint, mlflow: see their classes.
    """

    name: str | None = None
    seed: int = 0
    method: MethodSettings = field(default_factory=_default_method)
    optim: OptimSettings = field(default_factory=_default_optim)
    evaluation: AttackSettings = field(default_factory=_default_evaluation)
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    mlflow: MlflowSettings = field(default_factory=MlflowSettings)

    def __post_init__(self) -> None:
        from trainables.attacks import NORMS
        from trainables.training import check_seed

        if self.name is not None and not is_folder_name(self.name):
            raise must("name", f"{FOLDER_NAME_RULE}; or null", self.name)
        check_seed(self.seed, "seed")
        trees = self.method.trees
        if trees is not None and not trees:
            raise must("method.trees", "a non-empty list of tree names", list(trees))
        if trees is not None and len(set(trees)) != len(trees):
            raise must("method.trees", "distinct tree names", list(trees))
        templates = self.method.templates
        if not templates or any("{}" not in template for template in templates):
            raise must(
                "method.templates",
                "a non-empty list of strings with a {} placeholder",
                list(templates),
            )
        if self.evaluation.norm not in NORMS:
            raise must("evaluation.norm", f"one of {list(NORMS)}", self.evaluation.norm)
        step_size = self.evaluation.step_size
        if step_size is not None and not step_size > 0:
            raise must("evaluation.step_size", "> 0 or null", step_size)
        batch = self.optim.batch_size
        if batch < self.scaling.workers:
            raise must(
                "optim.batch_size",
                f">= scaling.workers ({self.scaling.workers}) so that every worker gets images",
                batch,
            )
        train_size = self.data.train_size
        if train_size is not None and train_size < batch:
            raise must("data.train_size", f">= optim.batch_size ({batch}) or null", train_size)
        # One seed for the whole run.
        if self.optim.seed != self.seed:
            object.__setattr__(self, "optim", replace(self.optim, seed=self.seed))
        if self.evaluation.seed != self.seed:
            object.__setattr__(self, "evaluation", replace(self.evaluation, seed=self.seed))
