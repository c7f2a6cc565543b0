"""JSON Schema and AsyncAPI 3.0, generated from the same models the runtime validates with.

The generated files are committed under ``schemas/``; ``clicktune schemas`` rewrites them and a
test fails when they drift from the models.
"""

import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from schemas.base import Event
from schemas.dead_letter import HEADERS, OPTIONAL_HEADERS
from schemas.examples import example_json
from schemas.limits import MAX_MESSAGE_BYTES
from schemas.topics import ALL_TOPICS, TopicSpec

PACKAGE_DIR = Path(__file__).resolve().parent
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
KAFKA_BINDING_VERSION = "0.5.0"

#: Which side of clicktune sends and receives each topic (AsyncAPI operations).
_OPERATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "events": (("receive", "consumer"),),
    "release": (("receive", "consumer"),),
    "tasks": (("send", "consumer"), ("receive", "trainer")),
    "status": (("send", "consumer"), ("send", "trainer")),
    "models": (("send", "trainer"),),
    "dlq": (("send", "consumer"),),
}


def _all_messages() -> list[type[Event]]:
    return [m for t in ALL_TOPICS for m in t.messages]


def json_schemas() -> dict[str, dict[str, Any]]:
    """``{file name: JSON Schema}``, one self-contained schema per message type."""
    out: dict[str, dict[str, Any]] = {}
    for model in _all_messages():
        schema = model.model_json_schema(mode="validation")
        out[f"{model.event_type}.schema.json"] = {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": f"https://clicktune.dev/schemas/{model.event_type}.schema.json",
            **schema,
            "examples": [example_json(model)],
        }
    return out


def _channel_id(topic: TopicSpec) -> str:
    return topic.key


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every clicktune topic."""
    _, defs = models_json_schema(
        [(m, "validation") for m in _all_messages()],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    for topic in ALL_TOPICS:
        channel_messages: dict[str, Any] = {}
        if topic.raw:
            messages["deadLetter"] = _dead_letter_message(topic)
            channel_messages["deadLetter"] = {"$ref": "#/components/messages/deadLetter"}
        for model in topic.messages:
            messages[model.event_type] = {
                "name": model.event_type,
                "title": model.__name__,
                "summary": (model.__doc__ or "").strip().splitlines()[0],
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
                "bindings": {"kafka": _key_binding(topic)},
                "examples": [{"name": "example", "payload": example_json(model)}],
            }
            channel_messages[model.event_type] = {
                "$ref": f"#/components/messages/{model.event_type}"
            }
        cid = _channel_id(topic)
        channels[cid] = {
            "address": topic.name,
            "title": topic.name,
            "description": topic.description,
            "messages": channel_messages,
            "bindings": {
                "kafka": {
                    "topic": topic.name,
                    "partitions": topic.partitions,
                    "topicConfiguration": {"max.message.bytes": MAX_MESSAGE_BYTES},
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
        for action, service in _OPERATIONS[topic.key]:
            operations[f"{service}{action.title()}{cid.title()}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{cid}"},
                "summary": f"The {service} {action}s on {topic.name}.",
                "messages": [
                    {"$ref": f"#/channels/{cid}/messages/{name}"} for name in channel_messages
                ],
            }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "clicktune",
            "version": "1.0.0",
            "description": "Clickstream in, fine-tuned embedding models out. Topic names are "
            "the defaults; deployments may prefix (CLICKTUNE_TOPIC_PREFIX) or rename them.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "production": {
                "host": "kafka:9092",
                "protocol": "kafka",
                "description": "Apache Kafka (deploy/).",
            },
            "embedded": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "`clicktune broker`: tansu, memory storage, for demos and tests.",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def _key_binding(topic: TopicSpec) -> dict[str, Any]:
    return {
        "key": {"type": "string", "description": topic.key_description},
        "bindingVersion": KAFKA_BINDING_VERSION,
    }


def _dead_letter_message(topic: TopicSpec) -> dict[str, Any]:
    return {
        "name": "deadLetter",
        "title": "Dead letter",
        "summary": "The refused record's original bytes; the reason is in the headers.",
        "contentType": "application/octet-stream",
        "headers": {
            "type": "object",
            "required": sorted(HEADERS),
            "properties": {
                name: {"type": "string", "description": desc}
                for name, desc in sorted({**HEADERS, **OPTIONAL_HEADERS}.items())
            },
        },
        "payload": {"type": "string", "format": "binary"},
        "bindings": {"kafka": _key_binding(topic)},
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def generated_files() -> dict[str, str]:
    """``{path relative to schemas/: content}`` of every generated file."""
    files = {f"json/{name}": render(doc) for name, doc in json_schemas().items()}
    files["asyncapi.json"] = render(asyncapi())
    return files


def write(directory: Path = PACKAGE_DIR) -> list[Path]:
    written = []
    for rel, content in generated_files().items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


def drift(directory: Path = PACKAGE_DIR) -> list[str]:
    """Generated files that are missing or differ from the models (relative paths)."""
    stale = []
    for rel, content in generated_files().items():
        path = directory / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            stale.append(rel)
    expected = set(generated_files())
    for path in sorted((directory / "json").glob("*.json")):
        rel = f"json/{path.name}"
        if rel not in expected:
            stale.append(rel)
    return stale
