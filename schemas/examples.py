"""One canonical example per message type, used in the AsyncAPI document and the README."""

from datetime import UTC, datetime
from typing import Any

from schemas.base import Event
from schemas.clickstream import ClickEvent, IrrelevantEvent, ItemEvent, SearchEvent
from schemas.model_ready import ModelReadyEvent
from schemas.release import ReleaseEvent
from schemas.task import StatusEvent, TaskEvent

#: The clock the examples were written against; validate them with ``context={"now": ...}``.
EXAMPLE_TIME = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
_T = "2026-11-24T12:00:00Z"

_RAW: dict[type[Event], dict[str, Any]] = {
    SearchEvent: {
        "session_id": "s-7f3a",
        "user_id": "u-42",
        "query": "gaming mouse pad",
        "results": [
            {"item_id": "sku-1001", "rank": 1, "text": "Wireless Game Pad for PC and Console"},
            {"item_id": "sku-2002", "rank": 2, "text": "XL Gaming Mouse Pad, stitched edges"},
            {"item_id": "sku-3003", "rank": 3},
        ],
        "meta": {"page": 1, "engine": "bm25+dense"},
    },
    ClickEvent: {"session_id": "s-7f3a", "item_id": "sku-2002"},
    IrrelevantEvent: {"session_id": "s-9b21"},
    ItemEvent: {
        "item_id": "sku-3003",
        "text": "Desk mat 90x40 cm, non-slip rubber base",
        "meta": {"category": "accessories"},
    },
    ReleaseEvent: {
        "fine_tuning_method": "default",
        "metadata": {"requested_by": "nightly-cron"},
        "idempotency_key": "release-2026-11-24",
    },
    TaskEvent: {
        "task_id": "task-1a2b3c",
        "batch_id": "batch-000017",
        "fine_tuning_method": "default",
        "metadata": {"requested_by": "nightly-cron"},
        "idempotency_key": "release-2026-11-24",
        "session_count": 12873,
        "created_at": _T,
    },
    StatusEvent: {
        "task_id": "task-1a2b3c",
        "batch_id": "batch-000017",
        "fine_tuning_method": "default",
        "status": "done",
        "created_at": _T,
        "updated_at": "2026-11-24T12:41:07Z",
        "detail": "champion v3: ndcg@10 0.512 -> 0.561",
    },
    ModelReadyEvent: {
        "task_id": "task-1a2b3c",
        "batch_id": "batch-000017",
        "fine_tuning_method": "default",
        "model_name": "clicktune-default",
        "model_version": "3",
        "model_uri": "models:/clicktune-default/3",
        "artifact_sha256": "9f2c" + "0" * 56 + "beef",
        "embedding_dim": 384,
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "metrics": {
            "baseline": {"ndcg@10": 0.512, "mrr@10": 0.448},
            "tuned": {"ndcg@10": 0.561, "mrr@10": 0.497},
        },
        "mlflow_run_id": "0d5e6f7a8b9c4d1e",
        "created_at": "2026-11-24T12:41:07Z",
    },
}


def example_json(model: type[Event]) -> dict[str, Any]:
    """The wire JSON of ``model``'s example (envelope included)."""
    return {
        "type": model.event_type,
        "schema_version": 1,
        "event_id": f"ev-{model.event_type}-0001",
        "occurred_at": _T,
        **_RAW[model],
    }


def example(model: type[Event]) -> Event:
    return model.model_validate_json(_dumps(example_json(model)), context={"now": EXAMPLE_TIME})


def _dumps(obj: dict[str, Any]) -> str:
    import json

    return json.dumps(obj)
