"""The search: failed trials, cancel, a second iteration that builds on the first."""

import asyncio

import mlflow
import pytest
import redis.asyncio as aioredis
from hyperopt import STATUS_FAIL

from consumer.tasks import TaskStore
from producer.event_publisher import EventPublisher
from producer.settings import Settings
from schemas import TaskStatus
from tests.consumer.conftest import wait_until
from tests.trainer.conftest import experiment_of, frozen_batch
from trainer.evaluation import MAIN_METRIC
from trainer.fine_tuner import identity_query
from trainer.model_source import base_model_path
from trainer.ranking_data import RankingData, load_ranking_data
from trainer.search import SearchContext, _finetune_embedding_model_one_step_hyperopt
from trainer.task_runner import TaskRunner
from trainer.tracker import ExperimentsTracker, mlflow_name


async def one_trial(
    s: Settings, redis_client: aioredis.Redis, params: dict
) -> tuple[dict, RankingData, ExperimentsTracker, SearchContext]:
    """A frozen batch, then one trial of ``params`` through the hyperopt objective."""
    task_id = await frozen_batch(s, redis_client)
    data = await load_ranking_data(
        redis_client, s.redis_key_prefix, "b000001", test_fraction=s.test_fraction
    )
    tracker = ExperimentsTracker(s.mlflow_tracking_uri, "clicktune-test", "default", task_id)
    tracker.start_iteration()
    ctx = SearchContext(device="cpu", baseline={MAIN_METRIC: 0.5})
    result = await asyncio.to_thread(
        _finetune_embedding_model_one_step_hyperopt,
        base_model_path(s.base_model),
        s,
        data,
        identity_query,
        params,
        tracker,
        ctx,
    )
    return result, data, tracker, ctx


@pytest.mark.timeout(300)
async def test_a_failing_trial_is_logged_and_reported_as_failed(
    trainer_settings: Settings, redis_client: aioredis.Redis
) -> None:
    s = trainer_settings
    # Freezing more layers than the model has leaves nothing to train: AdamW refuses.
    result, data, tracker, ctx = await one_trial(
        s, redis_client, {"frozen_layers": 99, "learning_rate": 1e-5}
    )
    assert result["status"] == STATUS_FAIL
    assert ctx.trials_failed == 1
    [run] = tracker.client.search_runs([tracker.experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["clicktune.trial_status"] == "failed"
    assert "grad" in run.data.tags["clicktune.error"]
    # Out-of-range grid values fail the trial too, without crashing the search.
    refused = _finetune_embedding_model_one_step_hyperopt(
        base_model_path(s.base_model), s, data, identity_query, {"learning_rate": 7.0}, tracker, ctx
    )
    assert refused["status"] == STATUS_FAIL and ctx.trials_failed == 2


@pytest.mark.timeout(300)
async def test_cancel_stops_at_the_next_trial_boundary(
    trainer_settings: Settings, redis_client: aioredis.Redis
) -> None:
    s = trainer_settings.model_copy(update={"max_evals": 6})
    task_id = await frozen_batch(s, redis_client)
    store = TaskStore(redis_client, s.redis_key_prefix)
    record = await store.get(task_id)
    async with EventPublisher(s) as publisher:
        job = asyncio.create_task(TaskRunner(s, redis_client, publisher).run(record.task_event()))
        await wait_until(lambda: _processing(store, task_id), 60, "processing")
        await store.set_status(task_id, TaskStatus.CANCELED, "canceled by user")
        outcome = await job
    assert outcome is not None and outcome.status is TaskStatus.CANCELED
    assert (await store.get(task_id)).status is TaskStatus.CANCELED
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    experiment = experiment_of(client, task_id)
    assert len(client.search_runs([experiment.experiment_id])) < 6


async def _processing(store: TaskStore, task_id: str) -> bool:
    record = await store.get(task_id)
    return record is not None and record.status is TaskStatus.PROCESSING


@pytest.mark.timeout(600)
async def test_the_next_iteration_starts_from_the_champion_and_the_best_params(
    trainer_settings: Settings, redis_client: aioredis.Redis
) -> None:
    s = trainer_settings
    store = TaskStore(redis_client, s.redis_key_prefix)
    first = await frozen_batch(s, redis_client)
    async with EventPublisher(s) as publisher:
        runner = TaskRunner(s, redis_client, publisher)
        one = await runner.run((await store.get(first)).task_event())
        assert one is not None and one.model_ready is not None, one
        second = await frozen_batch(s, redis_client, sessions=60, seed=1, offset=10_000)
        two = await runner.run((await store.get(second)).task_event())
    assert two is not None and two.status is TaskStatus.DONE, two
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    exp_one = experiment_of(client, first)
    exp_two = experiment_of(client, second)
    assert exp_one.lifecycle_stage == "deleted"  # removed once the next iteration ended
    names_one = {
        r.info.run_name
        for r in client.search_runs(
            [exp_one.experiment_id], run_view_type=mlflow.entities.ViewType.ALL
        )
        if r.data.tags.get("clicktune.trial_status") == "ok"
    }
    names_two = {r.info.run_name for r in client.search_runs([exp_two.experiment_id])}
    assert names_one and names_one & names_two  # the previous best parameters, tried again
    if two.model_ready is not None:
        assert two.model_ready.base_model == one.model_ready.model_uri
        assert two.model_ready.model_version == "2"


@pytest.mark.timeout(300)
async def test_shutdown_stops_at_a_trial_boundary_and_leaves_the_task_processing(
    trainer_settings: Settings, redis_client: aioredis.Redis
) -> None:
    s = trainer_settings.model_copy(update={"max_evals": 6})
    task_id = await frozen_batch(s, redis_client)
    store = TaskStore(redis_client, s.redis_key_prefix)
    record = await store.get(task_id)
    async with EventPublisher(s) as publisher:
        runner = TaskRunner(s, redis_client, publisher)
        job = asyncio.create_task(runner.run(record.task_event()))
        await wait_until(lambda: _processing(store, task_id), 60, "processing")
        runner.stop_requested.set()  # what SIGTERM does in `clicktune train`
        outcome = await job
    assert outcome is None
    assert (await store.get(task_id)).status is TaskStatus.PROCESSING  # resumed later
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    assert len(client.search_runs([experiment_of(client, task_id).experiment_id])) < 6


@pytest.mark.timeout(300)
@pytest.mark.parametrize("every_epoch, evaluated", [(False, [1]), (True, [0, 1])])
async def test_a_run_is_evaluated_after_its_last_epoch_or_every_epoch(
    trainer_settings: Settings, redis_client: aioredis.Redis, every_epoch: bool, evaluated: list
) -> None:
    s = trainer_settings.model_copy(update={"epochs": 2, "eval_every_epoch": every_epoch})
    result, _, tracker, ctx = await one_trial(s, redis_client, {"learning_rate": 1e-5})
    [run] = tracker.client.search_runs([tracker.experiment_id])
    history = tracker.client.get_metric_history(run.info.run_id, mlflow_name(MAIN_METRIC))
    assert [m.step for m in history] == evaluated
    # The run's quality is its last epoch's evaluation either way.
    assert result["quality"] == pytest.approx(history[-1].value)
    assert ctx.stages.of_trial(1).get("eval", 0.0) > 0
