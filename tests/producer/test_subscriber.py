"""Indexer-side subscriptions: commit only after the caller has handled an event."""

import pytest

from producer.event_publisher import EventPublisher
from producer.settings import Settings
from producer.subscriber import subscribe_model_ready, subscribe_status
from schemas import ModelReadyEvent, StatusEvent, TaskStatus
from tests.factories import fresh


def _model_ready(version: int, method: str = "default") -> ModelReadyEvent:
    return fresh(ModelReadyEvent, model_version=str(version), fine_tuning_method=method)


def _status(task_id: str, status: TaskStatus) -> StatusEvent:
    return fresh(StatusEvent, task_id=task_id, status=status)


async def test_model_ready_commits_after_handling(settings: Settings) -> None:
    async with EventPublisher(settings) as publisher:
        for version in (1, 2, 3):
            await publisher.publish(_model_ready(version))

    async with subscribe_model_ready(settings, group_id="indexer") as events:
        first = await anext(events)
        assert first.model_version == "1"
    # Leaving the block normally commits the handled event: the group resumes at v2.

    class IndexerCrash(Exception):
        pass

    with pytest.raises(IndexerCrash):
        async with subscribe_model_ready(settings, group_id="indexer") as events:
            async for event in events:
                assert event.model_version == "2"
                raise IndexerCrash
    # v2 was not handled: it comes again, then v3.
    async with subscribe_model_ready(settings, group_id="indexer") as events:
        assert [(await anext(events)).model_version for _ in range(2)] == ["2", "3"]

    # Another indexer has its own group and sees everything.
    async with subscribe_model_ready(settings, group_id="other-indexer") as events:
        assert (await anext(events)).model_version == "1"


async def test_model_ready_filter_by_method(settings: Settings) -> None:
    async with EventPublisher(settings) as publisher:
        await publisher.publish(_model_ready(1, "default"))
        await publisher.publish(_model_ready(1, "ecommerce"))
        await publisher.publish(_model_ready(2, "ecommerce"))
    async with subscribe_model_ready(
        settings, group_id=None, fine_tuning_method="ecommerce"
    ) as events:
        got = [await anext(events) for _ in range(2)]
    assert [(e.fine_tuning_method, e.model_version) for e in got] == [
        ("ecommerce", "1"),
        ("ecommerce", "2"),
    ]


async def test_status_of_one_task_and_invalid_records_are_skipped(settings: Settings) -> None:
    async with EventPublisher(settings) as publisher:
        await publisher.publish(_status("task-a", TaskStatus.PENDING))
        await publisher.send_raw(settings.topic_prefix + settings.topic_status, b"garbage", b"x")
        await publisher.publish(_status("task-b", TaskStatus.PENDING))
        await publisher.publish(_status("task-a", TaskStatus.DONE))
    async with subscribe_status(settings, task_id="task-a") as events:
        got = [(await anext(events)).status for _ in range(2)]
    assert got == [TaskStatus.PENDING, TaskStatus.DONE]
