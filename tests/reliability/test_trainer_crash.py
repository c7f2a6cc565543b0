"""kill -9 the trainer in the middle of a search, start it again: the task resumes, reuses the
runs that had finished (runs are named by their parameters' digest), publishes one
`model_ready` and ends `done`."""

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from consumer.tasks import TaskStore
from producer.event_publisher import EventPublisher
from producer.settings import Settings
from schemas import TaskStatus, decode
from schemas.topics import MODELS, STATUS
from tests.consumer.conftest import wait_until
from tests.reliability.conftest import CLICKTUNE, kill_9, read_all, terminate
from tests.trainer.conftest import experiment_of, frozen_batch

LEASE_S = 5


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_trainer_killed_mid_search_resumes_without_retraining(
    consumer_settings: Settings,
    redis_client: aioredis.Redis,
    cli_env: dict[str, str],
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
    report,
) -> None:
    s = consumer_settings.model_copy(
        update={
            "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "trainer_group": f"{consumer_settings.topic_prefix}trainers",
        }
    )
    env = {
        **cli_env,
        "CLICKTUNE_REDIS_KEY_PREFIX": s.redis_key_prefix,
        "CLICKTUNE_MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
        "CLICKTUNE_TRAINER_GROUP": s.trainer_group,
        "CLICKTUNE_TRAINER_METRICS_PORT": "0",
        "CLICKTUNE_TRAINER_LEASE_S": str(LEASE_S),
        "CLICKTUNE_MAX_EVALS": "2",
        # Ships whatever the search found: the test is about the crash, not about learning.
        "CLICKTUNE_MIN_IMPROVEMENT": "-1",
        "CLICKTUNE_MAX_SEQ_LENGTH": "16",
        "CLICKTUNE_EPOCHS": "1",
        "CLICKTUNE_DEVICE": "cpu",
        "CLICKTUNE_TRAIN_BATCH_SIZE": "16",
        "CLICKTUNE_TEST_FRACTION": "0.3",
        "CLICKTUNE_TOP_N_PARAMS": "1",
        "CLICKTUNE_WORK_DIR": str(tmp_path / "work"),
    }
    started = time.monotonic()
    task_id = await frozen_batch(s, redis_client)
    store = TaskStore(redis_client, s.redis_key_prefix)
    record = await store.get(task_id)
    assert record is not None
    async with EventPublisher(s) as publisher:  # what the consumer's outbox would publish
        await publisher.publish(record.task_event())
    log = tmp_path / "trainer.log"

    def train() -> subprocess.Popen[bytes]:
        with log.open("ab") as err:
            proc = subprocess.Popen(
                [CLICKTUNE, "train"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        processes.append(proc)
        return proc

    first = train()
    # Killed once a trial has finished and the next one is training.
    await wait_until(lambda: _mid_search(s, task_id), 300, "a finished run and one running")
    kill_9(first)
    before = await asyncio.to_thread(_runs, s, task_id)
    killed = time.monotonic()
    second = train()
    await wait_until(lambda: _status(store, task_id, TaskStatus.DONE), 400, "the task done")
    resumed_in = time.monotonic() - killed
    await asyncio.to_thread(terminate, second, log)
    after = await asyncio.to_thread(_runs, s, task_id)
    ready = [decode(MODELS, r.value) for r in await read_all(s, MODELS)]
    statuses = [decode(STATUS, r.value).status for r in await read_all(s, STATUS)]
    final = await store.get(task_id)
    assert final is not None
    finished_before = {r["name"]: r["id"] for r in before if r["status"] == "FINISHED"}
    finished_after = [r for r in after if r["status"] == "FINISHED"]
    retrained = [
        r
        for r in finished_after
        if r["name"] in finished_before and r["id"] not in finished_before.values()
    ]
    trained_after = [r for r in finished_after if r["id"] not in finished_before.values()]
    report(
        f"trainer crash: kill -9 mid-search ({len(finished_before)} run finished, "
        f"{sum(r['status'] == 'RUNNING' for r in before)} running), restarted: task "
        f"{final.status.value} {resumed_in:.0f} s later, {len(finished_before)} finished run "
        f"reused, {len(retrained)} retrained, {len(trained_after)} trained after the restart, "
        f"{len(ready)} model_ready, statuses {[x.value for x in statuses]}, "
        f"{time.monotonic() - started:.0f} s"
    )
    assert final.status is TaskStatus.DONE, final.detail
    assert finished_before and not retrained
    assert len({r["name"] for r in finished_after}) == len(finished_after)  # one run per digest
    assert [e.task_id for e in ready] == [task_id]
    assert statuses[-1] is TaskStatus.DONE and statuses.count(TaskStatus.DONE) == 1


def _runs(s: Settings, task_id: str) -> list[dict[str, Any]]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=s.mlflow_tracking_uri)
    try:
        experiment = experiment_of(client, task_id)
    except ValueError:  # not created yet
        return []
    return [
        {"id": r.info.run_id, "name": r.info.run_name, "status": r.info.status}
        for r in client.search_runs([experiment.experiment_id])
    ]


async def _mid_search(s: Settings, task_id: str) -> bool:
    try:
        runs = await asyncio.to_thread(_runs, s, task_id)
    except Exception:  # the database is being created or written: try again
        return False
    statuses = [r["status"] for r in runs]
    return "FINISHED" in statuses and "RUNNING" in statuses


async def _status(store: TaskStore, task_id: str, status: TaskStatus) -> bool:
    record = await store.get(task_id)
    return record is not None and record.status is status
