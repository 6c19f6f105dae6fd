"""Ray Tune's Optuna searcher and ASHA scheduler, adapted to searches of Ray Train jobs.

- :class:`StudySearch` enters a trial ASHA stopped as PRUNED (with its per-epoch curve), not as
  COMPLETE with its low-budget value, which would bias TPE; it reports by completed epochs.
- :class:`EpochASHA` compares trials at rungs of completed epochs and never stops a trial on its
  last epoch.
"""

from __future__ import annotations

import math

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from raysearch.private_api import (
    optuna_trial_id,
    searcher_completed,
    searcher_study,
    searcher_trials,
)
from raysearch.search_state import FINISHED_KEY, NUMBER_KEY, OVERRIDES_KEY
from raysearch.spaces import SearchSpace
from trainables.numbers import is_finite_number


class StudySearch(OptunaSearch):
    """OptunaSearch that records how each trial ended and at which epoch it reported.

    - A trial whose last result lacks :data:`FINISHED_KEY` and did not fail was stopped early:
      it enters the study as PRUNED (OptunaSearch would enter it COMPLETE with its low-budget
      value, which biases TPE).
    - Intermediate values are reported by completed epochs, not Tune iterations (those restart
      when a search resumes), and only when the result carries the metric.
    - The Optuna trial number goes into the trial's config, so runs and jobs are named by it.
    - After a driver was killed, trials the study holds but Tune lost are taken over
      (:meth:`restore`).
    """

    def restore(self, checkpoint_path: str) -> None:
        """Restore the saved state, then adopt the study's orphans.

        A driver killed after asking the study for a trial but before Tune saved that trial
        leaves it RUNNING in the study and unknown to the restored search. The next trials
        Tune asks for take those over, in order: same number, same sampled values (Optuna
        returns a trial's stored value when it is asked again), so the same job, checkpoints
        and MLflow run, instead of a new trial beside an abandoned one.

        The saved sampler's random state predates those trials' draws: it is reseeded, or the
        next new trial would draw the same values as the first of them again.
        """
        super().restore(checkpoint_path)
        from optuna.trial import TrialState

        known = {trial.number for trial in searcher_trials(self).values()}
        study = searcher_study(self)
        unknown = [  # asked (not merely enqueued) since the save
            trial
            for trial in study.get_trials(deepcopy=False)
            if trial.number not in known and trial.state != TrialState.WAITING
        ]
        self._orphans = [trial for trial in unknown if trial.state == TrialState.RUNNING]
        if unknown:
            study.sampler.reseed_rng()

    def suggest(self, trial_id: str) -> dict | None:
        orphans = getattr(self, "_orphans", [])
        trials = searcher_trials(self)
        if trial_id not in trials and orphans:
            import optuna

            orphan = orphans.pop(0)
            trials[trial_id] = optuna.trial.Trial(searcher_study(self), optuna_trial_id(orphan))
        config = super().suggest(trial_id)
        if config is not None:
            config[NUMBER_KEY] = trials[trial_id].number
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in searcher_completed(self):
            self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list) or trial_id not in searcher_trials(self):
            return  # Optuna keeps no intermediate values for several objectives
        value, step = result.get(self.metric), result.get("epochs_completed")
        if is_finite_number(value) and step is not None:
            trial = searcher_trials(self)[trial_id]
            stored = self._stored(trial_id)
            if stored.state.name == "RUNNING" and int(step) not in stored.intermediate_values:
                trial.report(float(value), int(step))

    def _stored(self, trial_id: str):
        trial = searcher_trials(self)[trial_id]
        return trial.storage.get_trial(optuna_trial_id(trial))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        completed, trials = searcher_completed(self), searcher_trials(self)
        if trial_id in completed or trial_id not in trials:
            return
        if self._stored(trial_id).state.is_finished():
            # Told before the driver was killed, and the searcher's saved state predates it.
            completed.add(trial_id)
            return
        from optuna.trial import TrialState

        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [(result or {}).get(metric) for metric in metrics]
        if error:
            state, told = TrialState.FAIL, None
        elif not (result or {}).get(FINISHED_KEY):
            # Tune does not pass the result that made ASHA stop a trial to on_trial_result.
            self._report(trial_id, result or {})
            state, told = TrialState.PRUNED, None
        elif all(is_finite_number(value) for value in values):
            state, told = TrialState.COMPLETE, [float(value) for value in values]
        else:
            state, told = TrialState.FAIL, None
        searcher_study(self).tell(trials[trial_id], told, state=state)
        completed.add(trial_id)


class DefineByRun:
    """The space's define-by-run function as OptunaSearch wants it: the sampled config goes
    under :data:`OVERRIDES_KEY` (a class, not a lambda: the searcher's state is pickled)."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial) -> dict:
        return {OVERRIDES_KEY: self.space.suggest(trial)}


def trial_folder_name(trial) -> str:
    return f"trial-{trial.trial_id}"


class EpochASHA(AsyncHyperBandScheduler):
    """ASHA on completed epochs that never stops a trial on its last epoch.

    A trial's last epoch ends its job anyway; stopping it there would kill the trial before it
    records its final evaluation and closes its run, and it would count as pruned.
    """

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if result.get("epochs_completed", 0) >= result.get("epochs_total", math.inf):
            return TrialScheduler.CONTINUE
        return decision


def build_sampler(space: SearchSpace):
    import optuna

    if space.multi_objective:
        return optuna.samplers.NSGAIISampler(seed=space.budget.seed)
    return optuna.samplers.TPESampler(seed=space.budget.seed)


def build_scheduler(space: SearchSpace):
    if space.budget.scheduler == "none":
        return None
    objective = space.objectives[0]
    return EpochASHA(
        time_attr="epochs_completed",
        metric=objective.metric,
        mode=objective.mode,
        max_t=space.max_epochs + 1,  # +1: ASHA's own stop at max_t never fires
        grace_period=space.budget.grace_epochs,
        reduction_factor=space.budget.reduction_factor,
        stop_last_trials=False,
    )
