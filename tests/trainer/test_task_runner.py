"""A tiny end-to-end task on CPU: real model, real Redis, real broker, MLflow on sqlite."""

import mlflow
import pytest
import redis.asyncio as aioredis
from sentence_transformers import SentenceTransformer

from consumer.tasks import TaskStore
from producer.event_publisher import EventPublisher
from producer.settings import Settings
from schemas import ModelReadyEvent, TaskStatus, decode
from schemas.topics import MODELS, STATUS
from tests.conftest import read_topic
from tests.trainer.conftest import experiment_of, frozen_batch
from trainer.evaluation import MAIN_METRIC
from trainer.model_source import weights_sha256
from trainer.task_runner import TaskRunner


@pytest.mark.timeout(600)
async def test_a_task_produces_a_champion_and_one_model_ready(
    trainer_settings: Settings, redis_client: aioredis.Redis, tmp_path
) -> None:
    s = trainer_settings
    task_id = await frozen_batch(s, redis_client)
    record = await TaskStore(redis_client, s.redis_key_prefix).get(task_id)
    async with EventPublisher(s) as publisher:
        runner = TaskRunner(s, redis_client, publisher)
        outcome = await runner.run(record.task_event())
    assert outcome is not None
    assert outcome.status is TaskStatus.DONE, outcome.detail
    event = outcome.model_ready
    assert event is not None, outcome.detail
    # MLflow: runs of the iteration, a registered champion.
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    experiment = experiment_of(client, task_id)
    runs = client.search_runs([experiment.experiment_id])
    assert 1 <= len(runs) <= 2
    assert all(r.info.run_name and len(r.info.run_name) == 16 for r in runs)
    champion = client.get_model_version_by_alias(event.model_name, "champion")
    assert str(champion.version) == event.model_version
    # The event's URI loads, and its weights match the sha256.
    model = mlflow.sentence_transformers.load_model(event.model_uri)
    assert isinstance(model, SentenceTransformer)
    assert model.encode(["lamp"]).shape == (1, event.embedding_dim)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=event.model_uri, dst_path=str(tmp_path / "check")
    )
    from pathlib import Path

    assert weights_sha256(Path(local)) == event.artifact_sha256
    assert event.metrics.tuned[MAIN_METRIC] > event.metrics.baseline[MAIN_METRIC]
    # What the dashboard's best-metric panel plots: the champion against its baseline.
    method = event.fine_tuning_method
    gauges = runner.metrics
    assert gauges.best_metric.labels(method)._value.get() == event.metrics.tuned[MAIN_METRIC]
    assert gauges.baseline_metric.labels(method)._value.get() == event.metrics.baseline[MAIN_METRIC]
    [published] = await read_topic(s, MODELS, 1)
    assert decode(MODELS, published.value) == ModelReadyEvent.model_validate_json(
        event.model_dump_json()
    )
    statuses = [decode(STATUS, r.value).status for r in await read_topic(s, STATUS, 2)]
    assert statuses == [TaskStatus.PROCESSING, TaskStatus.DONE]
    # Redelivered: nothing happens twice.
    async with EventPublisher(s) as publisher:
        again = await TaskRunner(s, redis_client, publisher).run(record.task_event())
    assert again is None


@pytest.mark.timeout(600)
async def test_no_improvement_means_done_without_a_model(
    trainer_settings: Settings, redis_client: aioredis.Redis
) -> None:
    s = trainer_settings.model_copy(update={"min_improvement": 0.5, "max_evals": 1})
    task_id = await frozen_batch(s, redis_client)
    record = await TaskStore(redis_client, s.redis_key_prefix).get(task_id)
    async with EventPublisher(s) as publisher:
        outcome = await TaskRunner(s, redis_client, publisher).run(record.task_event())
    assert outcome is not None and outcome.model_ready is None
    assert outcome.status is TaskStatus.DONE
    assert outcome.detail.startswith(f"no improvement: {MAIN_METRIC}")
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    assert mlflow.MlflowClient().search_registered_models() == []


@pytest.mark.timeout(600)
async def test_a_sharp_drop_of_the_per_session_view_stops_a_model_that_gains_on_the_main(
    trainer_settings: Settings, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.task_runner as task_runner
    from trainer.tracker import ExperimentsTracker

    # The main-metric gate passes whatever the trial (its baseline reads as 0), and the best
    # trial's per-session rerank_ndcg@10 reads as 0.0: far below any real baseline.
    monkeypatch.setattr(task_runner, "MAIN_METRIC", "a metric no baseline has")
    monkeypatch.setattr(
        ExperimentsTracker, "best_metrics", lambda self: {task_runner.GUARD_METRIC: 0.0}
    )
    # The guard is opt-in: an operator sets the allowed drop below the default 1.
    assert Settings.model_fields["max_rerank_ndcg_drop"].default == 1.0
    s = trainer_settings.model_copy(
        update={"min_improvement": 0.0, "max_evals": 1, "max_rerank_ndcg_drop": 0.03}
    )
    task_id = await frozen_batch(s, redis_client)
    record = await TaskStore(redis_client, s.redis_key_prefix).get(task_id)
    async with EventPublisher(s) as publisher:
        outcome = await TaskRunner(s, redis_client, publisher).run(record.task_event())
    assert outcome is not None and outcome.model_ready is None
    assert outcome.detail.startswith("no improvement: rerank_ndcg@10 0.0000 vs baseline")
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    assert mlflow.MlflowClient().search_registered_models() == []


@pytest.mark.timeout(600)
async def test_a_task_interrupted_mid_search_resumes_without_retraining(
    trainer_settings: Settings, redis_client: aioredis.Redis
) -> None:
    s = trainer_settings
    task_id = await frozen_batch(s, redis_client)
    store = TaskStore(redis_client, s.redis_key_prefix)
    task = (await store.get(task_id)).task_event()
    async with EventPublisher(s) as publisher:
        first = await TaskRunner(s, redis_client, publisher).run(task)
    assert first is not None and first.model_ready is not None
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    experiment = experiment_of(client, task_id)
    runs_before = {r.info.run_id for r in client.search_runs([experiment.experiment_id])}
    # As if the worker had died before finishing: the task is still "processing".
    await store.set_status(task_id, TaskStatus.PROCESSING, "worker died")
    async with EventPublisher(s) as publisher:
        runner = TaskRunner(s, redis_client, publisher)
        again = await runner.run(task)
    assert again is not None and again.status is TaskStatus.DONE, again
    runs_after = {r.info.run_id for r in client.search_runs([experiment.experiment_id])}
    assert runs_after == runs_before  # every finished run was reused, none trained again
    assert runner.metrics.trials.labels(outcome="ok")._value.get() == 0


@pytest.mark.timeout(600)
async def test_a_new_task_with_an_old_id_does_not_reuse_old_runs(
    trainer_settings: Settings, redis_client: aioredis.Redis
) -> None:
    s = trainer_settings.model_copy(update={"max_evals": 1})
    old = await frozen_batch(s, redis_client)
    store = TaskStore(redis_client, s.redis_key_prefix)
    async with EventPublisher(s) as publisher:
        await TaskRunner(s, redis_client, publisher).run((await store.get(old)).task_event())
    # Redis wiped (or a new deployment prefix): batch and task ids start over.
    for key in [k async for k in redis_client.scan_iter(f"{s.redis_key_prefix}*")]:
        await redis_client.delete(key)
    new = await frozen_batch(s, redis_client)
    assert new == old
    async with EventPublisher(s) as publisher:
        runner = TaskRunner(s, redis_client, publisher)
        await runner.run((await store.get(new)).task_event())
    assert runner.metrics.trials.labels(outcome="ok")._value.get() == 1  # trained, not reused
