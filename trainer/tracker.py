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
import time
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from sentence_transformers import SentenceTransformer

from trainer.params import FineTuningParams
from trainer.stages import StageClock

log = logging.getLogger(__name__)
METHOD_TAG = "clicktune.method"
TASK_TAG = "clicktune.task_id"
STATUS_TAG = "clicktune.trial_status"
#: The task's stage timings (JSON, seconds by stage) on the iteration's experiment.
STAGES_TAG = "clicktune.stage_seconds"
#: The logged model's embedding dimension, on the run that carries it.
DIM_TAG = "clicktune.embedding_dim"
CHAMPION = "champion"


def mlflow_name(metric: str) -> str:
    """MLflow refuses '@' in metric names: ``ndcg@10`` is logged as ``ndcg_at_10``."""
    return metric.replace("@", "_at_")


def metric_name(logged: str) -> str:
    return logged.replace("_at_", "@")


def embedding_dimension(model: SentenceTransformer) -> int:
    # sentence-transformers 6 renamed the method (the old name warns); 5.x has the old only.
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get() or 0)


def _metrics(values: dict[str, float], step: int = 0) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, v, now, step) for k, v in values.items() if math.isfinite(v)]


@dataclass
class Best:
    run_id: str
    quality: float
    params: FineTuningParams
    model_id: str | None = None
    embedding_dim: int | None = None  # None: a run logged before the tag existed


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
        # One request per batch of values, not one per value: each is a round trip to the
        # tracking server (a transaction on sqlite).
        self.client.log_batch(
            self._run_id,
            metrics=_metrics({f"baseline_{mlflow_name(k)}": v for k, v in baseline.items()}),
            params=[Param(k, str(v)) for k, v in params.model_dump().items()],
        )
        return self._run_id

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        if self._run_id is None:
            return
        named = {mlflow_name(k): v for k, v in metrics.items()}
        self.client.log_batch(self._run_id, metrics=_metrics(named, step=epoch))

    def end_run(
        self,
        quality: float | None,
        error: str | None = None,
        stages: dict[str, float] | None = None,
    ) -> None:
        """Close the run; ``stages`` (the trial's seconds by stage) are logged as metrics
        ``stage_<name>_s``."""
        assert self._run_id is not None
        values = {f"stage_{name}_s": seconds for name, seconds in (stages or {}).items()}
        if error is None and quality is not None:
            values["quality"] = quality
            tags, status = [RunTag(STATUS_TAG, "ok")], "FINISHED"
        else:
            error_tag = RunTag("clicktune.error", (error or "")[:4000])
            tags, status = [RunTag(STATUS_TAG, "failed"), error_tag], "FAILED"
        self.client.log_batch(self._run_id, metrics=_metrics(values), tags=tags)
        self.client.set_terminated(self._run_id, status)
        self._run_id = None

    # --- models --------------------------------------------------------------------------

    def keep_if_best(
        self, run_id: str, quality: float, params: FineTuningParams, model: SentenceTransformer
    ) -> bool:
        if self.best is not None and quality <= self.best.quality:
            return False
        with mlflow.start_run(run_id=run_id):
            # Given requirements, MLflow does not infer them: inferring loads the model in a
            # fresh Python process to watch its imports, seconds to tens of seconds per
            # logged model, and finds these same three packages.
            info = mlflow.sentence_transformers.log_model(
                model,
                name="model",
                pip_requirements=mlflow.sentence_transformers.get_default_pip_requirements(),
            )
        # Known now, from the model in memory: publishing needs no second load of the model.
        dim = embedding_dimension(model)
        self.client.set_tag(run_id, DIM_TAG, str(dim))
        previous, self.best = self.best, Best(run_id, quality, params, info.model_id, dim)
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
                dim = run.data.tags.get(DIM_TAG)
                return Best(
                    run.info.run_id,
                    run.data.metrics["quality"],
                    params,
                    models[run.info.run_id],
                    int(dim) if dim else None,
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
