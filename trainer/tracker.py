"""MLflow bookkeeping of a search: an experiment per iteration, a run per parameter set.

- The experiment of an iteration is named ``<model name>/<task id>@<task created_at>`` and
  tagged with the
  method; the previous iteration's experiment is found by that tag and removed once the
  current iteration is over (its registered champion stays until replaced).
- A run is named by the parameter set's digest: a retried task finds the finished run and
  reuses its quality instead of training again.
- The best run so far carries the model (MLflow's ``sentence_transformers`` flavor); when a
  better run appears, the previous best's logged model is deleted. The final best is
  registered under the method's model name with the alias ``champion``.
"""

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import ViewType
from sentence_transformers import SentenceTransformer

from trainer.params import FineTuningParams
from trainer.stages import StageClock

log = logging.getLogger(__name__)
METHOD_TAG = "clicktune.method"
TASK_TAG = "clicktune.task_id"
STATUS_TAG = "clicktune.trial_status"
#: The task's stage timings (JSON, seconds by stage) on the iteration's experiment.
STAGES_TAG = "clicktune.stage_seconds"
CHAMPION = "champion"


def mlflow_name(metric: str) -> str:
    """MLflow refuses '@' in metric names: ``ndcg@10`` is logged as ``ndcg_at_10``."""
    return metric.replace("@", "_at_")


def metric_name(logged: str) -> str:
    return logged.replace("_at_", "@")


@dataclass
class Best:
    run_id: str
    quality: float
    params: FineTuningParams
    model_id: str | None = None


class ExperimentsTracker:
    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        method: str,
        task_id: str,
        instance: str = "",
    ) -> None:
        """``instance`` tells apart two tasks with the same id (a new deployment prefix, a
        wiped Redis): the task's creation time. Without it their runs would be mistaken for
        one another's and reused."""
        mlflow.set_tracking_uri(tracking_uri)
        self.instance = instance
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.model_name = model_name
        self.method = method
        self.task_id = task_id
        self.experiment_id: str | None = None
        self.best: Best | None = None
        self._run_id: str | None = None

    # --- iterations ----------------------------------------------------------------------

    def start_iteration(self) -> str:
        name = f"{self.model_name}/{self.task_id}"
        if self.instance:
            name += f"@{self.instance}"
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            if existing.lifecycle_stage == "deleted":
                self.client.restore_experiment(existing.experiment_id)
            self.experiment_id = existing.experiment_id
        else:
            self.experiment_id = self.client.create_experiment(
                name, tags={METHOD_TAG: self.method, TASK_TAG: self.task_id}
            )
        self.best = self._best_logged()
        return self.experiment_id

    def previous_experiments(self) -> list[str]:
        found = self.client.search_experiments(
            view_type=ViewType.ACTIVE_ONLY,
            filter_string=f"tags.`{METHOD_TAG}` = '{self.method}'",
            order_by=["creation_time DESC"],
        )
        return [e.experiment_id for e in found if e.experiment_id != self.experiment_id]

    def previous_top_params(self, n: int) -> list[FineTuningParams]:
        """The ``n`` best parameter sets of the method's previous iteration."""
        for experiment_id in self.previous_experiments()[:1]:
            runs = self.client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{STATUS_TAG}` = 'ok'",
                order_by=["metrics.quality DESC"],
                max_results=n,
            )
            return [
                FineTuningParams.model_validate_json(r.data.tags["clicktune.params"])
                for r in runs
                if "clicktune.params" in r.data.tags
            ]
        return []

    def finish_iteration(self) -> None:
        for experiment_id in self.previous_experiments():
            self.client.delete_experiment(experiment_id)

    # --- runs ----------------------------------------------------------------------------

    def finished_quality(self, params: FineTuningParams) -> float | None:
        """Quality of an already finished run with these parameters (a retried task)."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"attributes.run_name = '{params.digest()}'"
        )
        for run in runs:
            if run.data.tags.get(STATUS_TAG) == "ok" and "quality" in run.data.metrics:
                return float(run.data.metrics["quality"])
        return None

    def start_run(self, params: FineTuningParams, baseline: dict[str, float]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=params.digest(),
            tags={
                "clicktune.params": params.model_dump_json(),
                STATUS_TAG: "running",
                METHOD_TAG: self.method,
                TASK_TAG: self.task_id,
            },
        )
        self._run_id = run.info.run_id
        for key, value in params.model_dump().items():
            self.client.log_param(self._run_id, key, value)
        for key, value in baseline.items():
            self.client.log_metric(self._run_id, f"baseline_{mlflow_name(key)}", value)
        return self._run_id

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        if self._run_id is None:
            return
        for key, value in metrics.items():
            if math.isfinite(value):
                self.client.log_metric(self._run_id, mlflow_name(key), value, step=epoch)

    def end_run(
        self,
        quality: float | None,
        error: str | None = None,
        stages: dict[str, float] | None = None,
    ) -> None:
        """Close the run; ``stages`` (the trial's seconds by stage) are logged as metrics
        ``stage_<name>_s``."""
        assert self._run_id is not None
        for name, seconds in (stages or {}).items():
            self.client.log_metric(self._run_id, f"stage_{name}_s", seconds)
        if error is None and quality is not None:
            self.client.log_metric(self._run_id, "quality", quality)
            self.client.set_tag(self._run_id, STATUS_TAG, "ok")
            self.client.set_terminated(self._run_id, "FINISHED")
        else:
            self.client.set_tag(self._run_id, STATUS_TAG, "failed")
            self.client.set_tag(self._run_id, "clicktune.error", (error or "")[:4000])
            self.client.set_terminated(self._run_id, "FAILED")
        self._run_id = None

    # --- models --------------------------------------------------------------------------

    def keep_if_best(
        self, run_id: str, quality: float, params: FineTuningParams, model: SentenceTransformer
    ) -> bool:
        if self.best is not None and quality <= self.best.quality:
            return False
        with mlflow.start_run(run_id=run_id):
            info = mlflow.sentence_transformers.log_model(model, name="model")
        previous, self.best = self.best, Best(run_id, quality, params, info.model_id)
        if previous is not None and previous.model_id:
            self.client.delete_logged_model(previous.model_id)
        log.info("new best run %s: quality %.4f", run_id, quality)
        return True

    def _best_logged(self) -> Best | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STATUS_TAG}` = 'ok'",
            order_by=["metrics.quality DESC"],
            max_results=5,
        )
        models = {
            m.source_run_id: m.model_id
            for m in mlflow.search_logged_models(
                experiment_ids=[self.experiment_id], output_format="list"
            )
        }
        for run in runs:
            if run.info.run_id in models:
                params = FineTuningParams.model_validate_json(run.data.tags["clicktune.params"])
                return Best(
                    run.info.run_id, run.data.metrics["quality"], params, models[run.info.run_id]
                )
        return None

    def best_metrics(self) -> dict[str, float]:
        """The best run's last evaluation, under the metrics' own names."""
        assert self.best is not None
        logged = self.client.get_run(self.best.run_id).data.metrics
        return {
            metric_name(k): float(v)
            for k, v in logged.items()
            if not k.startswith(("baseline_", "stage_")) and k not in ("quality", "val_loss")
        }

    def log_stages(self, stages: StageClock) -> None:
        """The task's seconds by stage on the iteration's experiment (what the task is in
        MLflow), as one JSON tag: ``{"task": {stage: s}, "trials": {kind: s summed over
        trials}, "trial_count": n}``. Each trial's own stages are its run's ``stage_*_s``
        metrics (a tag holds 5,000 characters; a search can have a hundred trials)."""
        if self.experiment_id is None:
            return
        value = {
            "task": {k: round(v, 3) for k, v in stages.outside_trials().items()},
            "trials": {k: round(v, 3) for k, v in stages.trials_total().items()},
            "trial_count": len(stages.trials()),
        }
        self.client.set_experiment_tag(self.experiment_id, STAGES_TAG, json.dumps(value))

    def register_best(self, tags: dict[str, Any]) -> tuple[str, str]:
        """Register the best model as the method's champion; return (version, model URI)."""
        assert self.best is not None and self.best.model_id
        version = mlflow.register_model(
            f"models:/{self.best.model_id}",
            self.model_name,
            tags={k: json.dumps(v) if not isinstance(v, str) else v for k, v in tags.items()},
        )
        self.client.set_registered_model_alias(self.model_name, CHAMPION, version.version)
        return str(version.version), f"models:/{self.model_name}/{version.version}"

    def champion_uri(self) -> str | None:
        try:
            version = self.client.get_model_version_by_alias(self.model_name, CHAMPION)
        except mlflow.exceptions.MlflowException:
            return None
        return f"models:/{self.model_name}/{version.version}"
