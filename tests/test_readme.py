"""The README tells the truth: examples, configuration table, commands."""

import json
import re
from pathlib import Path

import typer

from producer.cli import app
from producer.settings_doc import BEGIN, END, FLAGS, settings_table
from schemas.codec import decode
from schemas.examples import EXAMPLE_TIME, example_json
from schemas.topics import ALL_TOPICS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_message_has_its_example_and_it_is_valid() -> None:
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", README, re.S)]
    by_type = {b["type"]: b for b in blocks if isinstance(b, dict) and "type" in b}
    for topic in ALL_TOPICS:
        for model in topic.messages:
            shown = by_type.get(model.event_type)
            assert shown == example_json(model), f"README example of {model.event_type}"
            decode(topic, json.dumps(shown).encode(), now=EXAMPLE_TIME)


def test_configuration_table_matches_the_settings() -> None:
    section = README.split(BEGIN)[1].split(END)[0].strip()
    assert section == settings_table(), "run: python -m producer.settings_doc README.md"


def test_documented_flags_exist() -> None:
    command = typer.main.get_command(app)
    options = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for flag in FLAGS.values():
        for name in (
            [flag.replace("[no-]", ""), flag.replace("[no-]", "no-")] if "[no-]" in flag else [flag]
        ):
            assert name in options, name


def test_the_two_commands_exist_and_ci_runs_the_test_command() -> None:
    assert "bash .ci/demo" in README and "bash .ci/test" in README
    assert (ROOT / ".ci" / "demo").is_file() and (ROOT / ".ci" / "test").is_file()
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^bash \.ci/test$", ci, re.M)
