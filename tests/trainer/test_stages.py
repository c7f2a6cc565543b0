"""Stage timings: the clock's views and summary; a task's stages in MLflow and its status."""

import json

import mlflow
import pytest
import redis.asyncio as aioredis

from consumer.tasks import TaskStore
from producer.event_publisher import EventPublisher
from producer.settings import Settings
from tests.trainer.conftest import experiment_of, frozen_batch
from trainer.stages import StageClock
from trainer.task_runner import TaskRunner


def test_stages_add_up_and_group_by_kind() -> None:
    clock = StageClock()
    clock.add("read_batch", 0.5)
    clock.add("baseline", 2.0)
    for n in (1, 2):
        clock.add(f"trial_{n}_setup", 0.1)
        clock.add(f"trial_{n}_train", 10.0 * n)
        clock.add(f"trial_{n}_eval", 1.0)
        clock.add(f"trial_{n}_eval", 1.0)  # two epochs
    clock.add("mlflow", 0.2)
    clock.add("trial_2_mlflow", 0.3)
    with clock.time("register"):
        pass
    assert clock.trials() == [1, 2]
    assert clock.of_trial(2) == {"setup": 0.1, "train": 20.0, "eval": 2.0, "mlflow": 0.3}
    assert clock.trials_total() == pytest.approx(
        {"setup": 0.2, "train": 30.0, "eval": 4.0, "mlflow": 0.3}
    )
    assert set(clock.outside_trials()) == {"read_batch", "baseline", "mlflow", "register"}
    grouped = clock.grouped()
    assert grouped["train"] == 30.0 and grouped["mlflow"] == pytest.approx(0.5)
    summary = clock.summary()
    assert summary.startswith(f"{sum(clock.seconds.values()):.1f} s: train 30.0, eval 4.0")
    assert "register" not in summary  # under 0.05 s: left out


@pytest.mark.timeout(600)
async def test_a_task_records_its_stages_in_mlflow_and_its_status(
    trainer_settings: Settings, redis_client: aioredis.Redis
) -> None:
    # Every stage, registration included, whatever the one trial's quality: this test is
    # about the clock, not about learning (tests/trainer/test_task_runner.py is).
    s = trainer_settings.model_copy(update={"max_evals": 1, "min_improvement": -1.0})
    task_id = await frozen_batch(s, redis_client)
    record = await TaskStore(redis_client, s.redis_key_prefix).get(task_id)
    async with EventPublisher(s) as publisher:
        outcome = await TaskRunner(s, redis_client, publisher).run(record.task_event())
    assert outcome is not None and outcome.model_ready is not None, outcome
    stages = outcome.stage_seconds
    for stage in ("read_batch", "load_model", "build_data", "baseline", "mlflow"):
        assert stages[stage] >= 0, stage
    for stage in ("setup", "train", "eval", "mlflow", "log_model"):
        assert stages[f"trial_1_{stage}"] > 0, stage
    assert stages["register"] > 0 and stages["fetch_model"] > 0
    assert "train " in outcome.detail and "baseline " in outcome.detail
    assert (await TaskStore(redis_client, s.redis_key_prefix).get(task_id)).detail == (
        outcome.detail
    )
    assert not any(k.startswith("stage_") for k in outcome.model_ready.metrics.tuned)
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    experiment = experiment_of(client, task_id)
    tagged = json.loads(experiment.tags["clicktune.stage_seconds"])
    assert tagged["trial_count"] == 1
    assert tagged["trials"]["train"] == pytest.approx(stages["trial_1_train"], abs=0.01)
    assert tagged["task"]["read_batch"] == pytest.approx(stages["read_batch"], abs=0.01)
    [run] = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["stage_train_s"] == pytest.approx(stages["trial_1_train"])
    assert run.data.metrics["stage_eval_s"] == pytest.approx(stages["trial_1_eval"])
