"""Where the training loop runs: one worker of a Ray Train worker group, or a job's one worker in
the calling process (which keeps its checkpoints itself). Both place the model, prepare the data
loader, read the saved state and report each epoch the same way, so the loop does not ask which
it runs in."""

from __future__ import annotations

from pathlib import Path

import torch

from trainables.checkpoints import STATE_FILE, latest_checkpoint, save_checkpoint
from trainables.readers import load_torch_file


class RayTrainWorker:
    """One worker of a Ray Train worker group: Train places the model (DDP), shards the data
    and keeps the checkpoints."""

    def __init__(self):
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def prepare_loader(self, loader):
        import ray.train.torch

        return ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False)

    def saved_state(self) -> dict | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            return load_torch_file(Path(folder) / STATE_FILE, map_location=self.device)

    def report(self, metrics: dict, epoch: int, folder: str | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(folder) if folder else None
        ray.train.report(metrics, checkpoint=checkpoint)


class InProcessWorker:
    """A job's one worker in the calling process, without Ray Train: it keeps the checkpoints
    in ``checkpoint_folder`` (the ``keep`` newest) and calls ``after_report(metrics,
    checkpoint_path)`` after each epoch. ``last_metrics`` and ``last_checkpoint`` hold the
    final report once the loop has run."""

    rank, world = 0, 1

    def __init__(self, checkpoint_folder: str, keep: int, after_report=None):
        self.checkpoint_folder = Path(checkpoint_folder)
        self.keep = keep
        self.after_report = after_report
        self.device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        self.last_metrics: dict = {}
        self.last_checkpoint: str | None = None

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def prepare_loader(self, loader):
        return _OnDevice(loader, self.device)

    def saved_state(self) -> dict | None:
        latest = latest_checkpoint(self.checkpoint_folder)
        if latest is None:
            return None
        return load_torch_file(latest / STATE_FILE, map_location=self.device)

    def report(self, metrics: dict, epoch: int, folder: str | None) -> None:
        saved = save_checkpoint(Path(folder), self.checkpoint_folder, epoch, self.keep)
        self.last_metrics, self.last_checkpoint = dict(metrics), str(saved)
        if self.after_report is not None:
            self.after_report(metrics, str(saved))


class _OnDevice:
    """Batches of ``loader`` moved to ``device`` (what Ray Train's prepared loader does)."""

    def __init__(self, loader, device: torch.device):
        self.loader, self.device = loader, device

    def __iter__(self):
        for images, labels in self.loader:
            yield images.to(self.device), labels.to(self.device)

    def __len__(self) -> int:
        return len(self.loader)
