"""The trainer loads models only as safetensors: a base model whose weights are a pickle ends
the task in ``error`` with a clear reason, before anything unpickles it.

Exercised for real: a task over a frozen batch in the shared Redis, run by the TaskRunner
with MLflow on sqlite, its base model a copy of all-MiniLM-L6-v2 with the weights re-saved as
``pytorch_model.bin`` by ``torch.save``.
"""

import shutil
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import torch
from safetensors.torch import load_file

from consumer.tasks import TaskStore
from producer.event_publisher import EventPublisher
from producer.settings import Settings
from schemas import TaskStatus
from tests.trainer.conftest import frozen_batch
from trainer.model_source import base_model_path
from trainer.task_runner import TaskRunner


@pytest.mark.timeout(300)
async def test_a_pickle_only_base_model_is_refused(
    trainer_settings: Settings, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    pickled = tmp_path / "pickled-base"
    shutil.copytree(base_model_path("all-MiniLM-L6-v2"), pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    s = trainer_settings.model_copy(update={"base_model": str(pickled)})
    task_id = await frozen_batch(s, redis_client, sessions=20)
    record = await TaskStore(redis_client, s.redis_key_prefix).get(task_id)
    assert record is not None
    async with EventPublisher(s) as publisher:
        runner = TaskRunner(s, redis_client, publisher)
        outcome = await runner.run(record.task_event())
    assert outcome is not None and outcome.status is TaskStatus.ERROR
    assert outcome.model_ready is None
    assert "UnsafeModelError" in outcome.detail and "only as safetensors" in outcome.detail
    assert "pytorch_model.bin" in outcome.detail
    assert runner.metrics.trials.labels(outcome="ok")._value.get() == 0
