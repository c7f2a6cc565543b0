"""A frozen batch in Redis whose clicks follow a relevance the base model does not know."""

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from consumer.entries import to_entry
from consumer.store import PartitionBatch, RedisStore
from producer.settings import Settings
from schemas import ClickEvent, ReleaseEvent, SearchEvent
from tests.consumer.conftest import _drop_keys  # noqa: F401  (the same key clean-up)

# Each product line has a code word that only the clicks tie to its items' texts.
LINES = ["orbit", "falcon", "maple", "quartz", "tundra", "ember", "lagoon", "cobalt"]
NOUNS = ["lamp", "chair", "kettle", "blanket", "speaker", "mug"]


def clicked_sessions(n: int, seed: int = 0) -> tuple[list, dict[str, str]]:
    rng = random.Random(seed)
    items = {
        f"{line}-{noun}": f"{noun} model {rng.randint(100, 999)}"
        for line in LINES
        for noun in NOUNS
    }
    events = []
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    for k in range(n):
        line, noun = rng.choice(LINES), rng.choice(NOUNS)
        target = f"{line}-{noun}"
        others = rng.sample([i for i in items if i != target and i.endswith(noun)], 4)
        shown = [*others[:2], target, *others[2:]]
        sid = f"s{k}"
        when = t0 + timedelta(seconds=k)
        events.append(
            SearchEvent.create(
                event_id=f"{sid}:q",
                occurred_at=when,
                session_id=sid,
                query=f"{line} {noun} {rng.choice(['buy', 'best', 'new', 'sale'])} {k % 7}",
                results=[{"item_id": i, "text": items[i]} for i in shown],
            )
        )
        events.append(
            ClickEvent.create(event_id=f"{sid}:c", occurred_at=when, session_id=sid, item_id=target)
        )
    return events, items


@pytest.fixture
def trainer_settings(consumer_settings: Settings, tmp_path: Path) -> Settings:
    return consumer_settings.model_copy(
        update={
            "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "max_evals": 2,
            "epochs": 1,
            "device": "cpu",
            "train_batch_size": 16,
            "work_dir": tmp_path / "work",
            "test_fraction": 0.3,
            "top_n_params": 1,
        }
    )


async def frozen_batch(
    settings: Settings,
    client: aioredis.Redis,
    sessions: int = 60,
    seed: int = 0,
    offset: int = 0,
) -> str:
    """Apply ``sessions`` clicked sessions and a release; return the task id."""
    events, _ = clicked_sessions(sessions, seed=seed)
    events = [
        e.model_copy(
            update={"session_id": f"{e.session_id}-{seed}", "event_id": f"{e.event_id}-{seed}"}
        )
        for e in events
    ]
    store = RedisStore(client, settings)
    entries = [to_entry(offset + i, e) for i, e in enumerate(events)]
    await store.apply([PartitionBatch("ev:0", entries)])
    release = ReleaseEvent.create()
    raw = release.model_dump_json().encode()
    [result] = await store.apply([PartitionBatch("rel:0", [to_entry(offset, release, raw=raw)])])
    return result.releases[0].task_id


def experiment_of(client, task_id: str):
    """The MLflow experiment of a task's iteration (active or deleted)."""
    from mlflow.entities import ViewType

    [experiment] = client.search_experiments(
        view_type=ViewType.ALL, filter_string=f"tags.`clicktune.task_id` = '{task_id}'"
    )
    return experiment
