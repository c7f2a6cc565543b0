"""The committed JSON Schema and AsyncAPI files are generated from the runtime models."""

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from schemas import spec
from schemas.examples import example_json
from schemas.topics import ALL_TOPICS

# The official AsyncAPI 3.0.0 JSON Schema (npm @asyncapi/specs 6.11.1, Apache-2.0).
ASYNCAPI_META = Path(__file__).parent / "data" / "asyncapi-3.0.0.schema.json"
MESSAGES = [m for t in ALL_TOPICS for m in t.messages]


def test_committed_files_match_the_models() -> None:
    stale = spec.drift()
    assert stale == [], f"regenerate with `clicktune schemas`: {stale}"


def test_drift_is_detected(tmp_path: Path) -> None:
    spec.write(tmp_path)
    assert spec.drift(tmp_path) == []
    target = tmp_path / "json" / "click.schema.json"
    doc = json.loads(target.read_text())
    doc["properties"]["item_id"]["maxLength"] = 999
    target.write_text(spec.render(doc))
    (tmp_path / "json" / "removed.schema.json").write_text("{}")
    assert spec.drift(tmp_path) == ["json/click.schema.json", "json/removed.schema.json"]


def _asyncapi_errors(document: dict[str, Any]) -> list[str]:
    meta = json.loads(ASYNCAPI_META.read_text())
    validator = jsonschema.Draft7Validator(meta)
    return [f"{list(e.path)}: {e.message[:200]}" for e in validator.iter_errors(document)]


def test_asyncapi_is_valid_asyncapi_3() -> None:
    document = json.loads((spec.PACKAGE_DIR / "asyncapi.json").read_text())
    assert document["asyncapi"] == "3.0.0"
    assert _asyncapi_errors(document) == []


def test_the_asyncapi_check_is_not_vacuous() -> None:
    document = copy.deepcopy(spec.asyncapi())
    document["channels"]["events"]["address"] = 42
    del document["info"]["title"]
    assert len(_asyncapi_errors(document)) >= 2


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_asyncapi_reference_resolves() -> None:
    document = spec.asyncapi()
    refs = _refs(document)
    assert len(refs) > 20
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            assert part in node, f"dangling {ref}"
            node = node[part]


def test_asyncapi_covers_every_topic_and_message() -> None:
    document = spec.asyncapi()
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == {t.name for t in ALL_TOPICS}
    assert set(document["components"]["messages"]) == {m.event_type for m in MESSAGES} | {
        "deadLetter"
    }
    assert document["channels"]["events"]["bindings"]["kafka"]["partitions"] == 6


@pytest.mark.parametrize("model", MESSAGES, ids=lambda m: m.event_type)
def test_json_schema_accepts_the_example_and_carries_the_limits(model: type) -> None:
    schema = json.loads((spec.PACKAGE_DIR / "json" / f"{model.event_type}.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = example_json(model)
    assert list(validator.iter_errors(good)) == []
    assert not validator.is_valid({**good, "unexpected": 1})  # extra="forbid" is published
    assert not validator.is_valid({**good, "event_id": ""})  # min length is published
    missing_type = {k: v for k, v in good.items() if k != "type"}
    assert not validator.is_valid(missing_type)


def test_search_schema_publishes_rank_and_result_limits() -> None:
    schema = json.loads((spec.PACKAGE_DIR / "json" / "search.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = example_json(MESSAGES[0])
    bad_rank = {**good, "results": [{"item_id": "a", "rank": 0}]}
    too_many = {**good, "results": [{"item_id": f"i{k}"} for k in range(201)]}
    assert not validator.is_valid(bad_rank)
    assert not validator.is_valid(too_many)
