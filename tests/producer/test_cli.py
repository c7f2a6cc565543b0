"""The `clicktune` executable, run as a user runs it, against the test broker."""

import asyncio
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from producer.broker import free_port
from producer.settings import Settings
from schemas import ModelReadyEvent, decode
from schemas.topics import ALL_TOPICS, CLICKSTREAM, RELEASE
from tests.conftest import read_topic
from tests.factories import fresh, fresh_json

CLICKTUNE = str(Path(sys.executable).with_name("clicktune"))


def run(
    args: list[str], env: dict[str, str], stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLICKTUNE, *args],
        env=env,
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _line(model: type, **changes: object) -> str:
    return json.dumps(fresh_json(model, **changes))


@pytest.fixture
def mixed_file(tmp_path: Path) -> Path:
    from schemas import ClickEvent, ItemEvent, ReleaseEvent, SearchEvent

    lines = [
        _line(ItemEvent, event_id="good-1"),  # 1
        _line(SearchEvent, event_id="good-2"),  # 2
        "",  # 3: blank lines are skipped, not counted
        '{"type": "click", "session_id": "s"',  # 4: truncated
        _line(ClickEvent, event_id="good-3"),  # 5
        _line(
            ClickEvent,
            event_id="bad-rank",
            type="search",
            results=[{"item_id": "a", "rank": 0}],
            query="q",
        ),  # 6
        _line(ClickEvent, type="purchase"),  # 7
        _line(ReleaseEvent, event_id="good-4"),  # 8: routed to the release topic
        _line(ClickEvent, occurred_at="9999-01-01T00:00:00Z"),  # 9
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_publish_file_with_good_and_bad_lines(
    mixed_file: Path, cli_env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    rejects = tmp_path / "rejects.jsonl"
    result = run(["publish", str(mixed_file), "--rejects", str(rejects)], cli_env)
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "sent 4, rejected 4, failed 0"
    err = result.stderr
    assert "Traceback" not in err
    assert "line 4: undecodable:" in err
    assert "line 6: schema: " in err and "rank" in err
    assert "line 7: unknown_type: unknown type 'purchase'" in err
    assert "line 9: schema: " in err and "in the future" in err
    kept = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert [k["line"] for k in kept] == [4, 6, 7, 9]
    assert kept[2]["reason"] == "unknown_type"
    assert json.loads(kept[2]["text"])["type"] == "purchase"

    clicks = await read_topic(settings, CLICKSTREAM, 3)
    assert sorted(decode(CLICKSTREAM, r.value).event_id for r in clicks) == [
        "good-1",
        "good-2",
        "good-3",
    ]
    releases = await read_topic(settings, RELEASE, 1)
    assert decode(RELEASE, releases[0].value).event_id == "good-4"


async def test_publish_from_stdin(cli_env: dict[str, str], settings: Settings) -> None:
    from schemas import ClickEvent

    lines = "".join(_line(ClickEvent, event_id=f"stdin-{i}") + "\n" for i in range(50))
    result = run(["publish", "-", "--no-progress"], cli_env, stdin=lines.encode())
    assert result.returncode == 0, result.stderr
    assert "sent 50, rejected 0, failed 0" in result.stdout
    records = await read_topic(settings, CLICKSTREAM, 50)
    assert len(records) == 50


async def test_release_command(cli_env: dict[str, str], settings: Settings) -> None:
    result = run(
        [
            "release",
            "--method",
            "ecommerce",
            "-k",
            "nightly",
            "--batch-id",
            "b-1",
            "--metadata",
            '{"requested_by": "test"}',
        ],
        cli_env,
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    records = await read_topic(settings, RELEASE, 1)
    event = decode(RELEASE, records[0].value)
    assert event.event_id == printed["event_id"]
    assert (event.fine_tuning_method, event.batch_id, event.idempotency_key) == (
        "ecommerce",
        "b-1",
        "nightly",
    )
    assert event.metadata == {"requested_by": "test"}
    assert records[0].key == b"nightly"


async def test_watch_prints_model_ready_events(cli_env: dict[str, str], settings: Settings) -> None:
    from producer.event_publisher import EventPublisher

    async with EventPublisher(settings) as publisher:
        for v in ("1", "2"):
            await publisher.publish(fresh(ModelReadyEvent, model_version=v))
    result = run(["watch", "--from-beginning", "-n", "2", "--for", "30"], cli_env)
    assert result.returncode == 0, result.stderr
    printed = [json.loads(x) for x in result.stdout.splitlines()]
    assert [p["model_version"] for p in printed] == ["1", "2"]
    table = run(
        ["watch", "--from-beginning", "-n", "2", "--format", "table", "--for", "30"], cli_env
    )
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()
    assert len(rows) == 3 and "models:/clicktune-default/3" in rows[1]
    assert "ndcg@10 0.5120->0.5610" in rows[1]


def test_flags_override_environment(cli_env: dict[str, str], settings: Settings) -> None:
    env = {**cli_env, "CLICKTUNE_TOPIC_PREFIX": "nowhere."}
    result = run(["--topic-prefix", settings.topic_prefix, "release", "-k", "flagged"], env)
    assert result.returncode == 0, result.stderr
    records = asyncio.run(read_topic(settings, RELEASE, 1))
    assert records[0].key == b"flagged"


@pytest.mark.parametrize(
    ("args", "env_extra", "says"),
    [
        (["publish"], {}, "Missing argument 'FILE.jsonl'"),
        (["publish", "/nonexistent.jsonl"], {}, "no such file"),
        (["publish", "x", "--bogus"], {}, "No such option"),
        (["nosuchcommand"], {}, "No such command"),
        (["release", "--metadata", "[1]"], {}, "must be a JSON object"),
        (["release", "--metadata", "{oops"], {}, "not JSON"),
        (["release", "--method", "has space"], {}, "fine_tuning_method"),
        (["watch", "--topic", "nope"], {}, "--topic"),
        (["watch", "-n", "0"], {}, "-n"),
        (["--security-protocol", "SASL_SSL", "release"], {}, "kafka_sasl_mechanism"),
        (["release"], {"CLICKTUNE_KAFKA_BOOTSTRAP_SERVERS": "nohost"}, "not host:port"),
        (["broker", "--port", "70000"], {}, "--port"),
        # Every subcommand, with missing or wrong arguments.
        (["publish", "-", "--progress", "x"], {}, "unexpected extra argument"),
        (["release", "--batch-id", ""], {}, "batch_id"),
        (["release", "-k"], {}, "requires an argument"),
        (["watch", "--format", "xml"], {}, "--format"),
        (["watch", "--for", "0"], {}, "--for"),
        (["broker", "--port", "abc"], {}, "--port"),
        (["topics", "--partitions", "0"], {}, "--partitions"),
        (["topics", "--replication-factor", "x"], {}, "--replication-factor"),
        (["consume", "--metrics-port", "70000"], {}, "--metrics-port"),
        (["consume", "extra"], {}, "unexpected extra argument"),
        (["consume"], {"CLICKTUNE_STARTUP_TIMEOUT_S": "-1"}, "startup_timeout_s"),
        (["schemas", "--out"], {}, "requires an argument"),
        (["schemas", "--check", "--bogus"], {}, "No such option"),
        (["train", "--max-evals", "0"], {}, "--max-evals"),
        (["train", "--params-grid", "/nonexistent.json"], {}, "--params-grid"),
        (["train", "--device", "tpu"], {}, "device"),
        (["status", "a", "b"], {}, "unexpected extra argument"),
        (["status"], {"CLICKTUNE_REDIS_URL": "http://x"}, "redis://"),
        (["cancel"], {}, "Missing argument 'TASK_ID'"),
        (["demo", "--sessions", "10"], {}, "--sessions"),
        (["demo", "--max-evals", "zero"], {}, "--max-evals"),
        (["--security-protocol", "bogus", "status"], {}, "--security-protocol"),
        (["--sasl-password-file", "/nonexistent", "release"], {}, "--sasl-password-file"),
    ],
)
def test_misuse_gets_one_line_and_a_nonzero_exit(
    args: list[str], env_extra: dict[str, str], says: str, cli_env: dict[str, str]
) -> None:
    result = run(args, {**cli_env, **env_extra})
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("clicktune: error: ")
    assert says in lines[0]


def test_no_command_prints_the_help(cli_env: dict[str, str]) -> None:
    result = run([], cli_env)
    assert result.returncode == 2
    assert "Usage: clicktune" in result.stdout + result.stderr
    assert "error" not in result.stderr and "Traceback" not in result.stderr


def test_unreachable_broker_is_one_line(cli_env: dict[str, str]) -> None:
    port = free_port()
    env = {
        **cli_env,
        "CLICKTUNE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "CLICKTUNE_KAFKA_REQUEST_TIMEOUT_MS": "2000",
    }
    result = run(["release"], env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and "cannot reach Kafka" in lines[0], result.stderr


CLOSED = "closed"  # stands for a loopback port nothing listens on


@pytest.mark.parametrize(
    ("args", "down", "says", "within_s"),
    [
        (["publish", "EVENTS"], "kafka", "cannot reach Kafka", 30),
        (["release"], "kafka", "cannot reach Kafka", 30),
        (["watch", "--for", "5"], "kafka", "cannot reach Kafka", 30),
        (["topics"], "kafka", "cannot reach Kafka", 30),
        (["status"], "redis", "cannot reach Redis", 30),
        (["cancel", "task-x"], "redis", "cannot reach Redis", 30),
        (["consume"], "redis", "not started after 3 s (CLICKTUNE_STARTUP_TIMEOUT_S): redis", 30),
        (["consume"], "kafka", "not started after 3 s (CLICKTUNE_STARTUP_TIMEOUT_S): kafka", 30),
        (["train"], "redis", "cannot reach Redis", 90),
        (["train"], "kafka", "cannot reach Kafka", 90),
        (["broker", "--port", "REDIS_PORT"], "", "already in use", 30),
        (["schemas", "--out", "/proc/no/such/dir"], "", "No such file or directory", 30),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, list) else str(v),
)
def test_unreachable_services_get_one_line_and_a_nonzero_exit(
    args: list[str],
    down: str,
    says: str,
    within_s: float,
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Every command that talks to Kafka or Redis, with that service on a closed port (the
    other one up): a one-line error, exit status 1, in bounded time."""
    import time

    closed = f"127.0.0.1:{free_port()}"
    env = {
        **cli_env,
        "CLICKTUNE_KAFKA_REQUEST_TIMEOUT_MS": "3000",
        "CLICKTUNE_STARTUP_TIMEOUT_S": "3",
        "CLICKTUNE_METRICS_PORT": "0",
        "CLICKTUNE_TRAINER_METRICS_PORT": "0",
        "CLICKTUNE_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    if down == "kafka":
        env["CLICKTUNE_KAFKA_BOOTSTRAP_SERVERS"] = closed
    elif down == "redis":
        env["CLICKTUNE_REDIS_URL"] = f"redis://{closed}/0"
    events = tmp_path / "events.jsonl"
    from schemas import ClickEvent

    events.write_text(_line(ClickEvent) + "\n")
    redis_port = env["CLICKTUNE_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
    args = [str(events) if a == "EVENTS" else redis_port if a == "REDIS_PORT" else a for a in args]
    started = time.monotonic()
    result = run(args, env, timeout=within_s + 30)
    elapsed = time.monotonic() - started
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("clicktune: error: "), result.stderr
    assert says in lines[0], lines[0]
    assert elapsed < within_s, f"{args}: {elapsed:.1f} s"


@pytest.mark.parametrize("command", [["status"], ["consume"], ["-vv", "consume"]])
def test_a_password_in_the_redis_url_is_never_printed(
    command: list[str], cli_env: dict[str, str]
) -> None:
    env = {
        **cli_env,
        "CLICKTUNE_REDIS_URL": f"redis://clicktune:hunter2-in-url@127.0.0.1:{free_port()}/0",
        "CLICKTUNE_STARTUP_TIMEOUT_S": "2",
        "CLICKTUNE_METRICS_PORT": "0",
    }
    result = run(command, env)
    assert result.returncode == 1
    assert "cannot reach Redis" in result.stderr or "not started" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def test_consume_stops_on_sigterm_while_waiting_for_its_services(cli_env: dict[str, str]) -> None:
    """Start-up waits for Redis and Kafka, but a signal ends the wait (it used to be ignored
    until both answered)."""
    import time

    env = {
        **cli_env,
        "CLICKTUNE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "CLICKTUNE_STARTUP_TIMEOUT_S": "0",  # wait forever
        "CLICKTUNE_METRICS_PORT": "0",
    }
    proc = subprocess.Popen(
        [CLICKTUNE, "consume"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(4)
        assert proc.poll() is None, proc.communicate()
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert time.monotonic() - sent < 10
    assert "Traceback" not in err


def test_schemas_check_and_write(tmp_path: Path, cli_env: dict[str, str]) -> None:
    assert run(["schemas", "--check"], cli_env).returncode == 0
    out = tmp_path / "spec"
    written = run(["schemas", "--out", str(out)], cli_env)
    assert written.returncode == 0
    assert (out / "asyncapi.json").is_file()
    assert len(list((out / "json").glob("*.schema.json"))) == sum(
        len(t.messages) for t in ALL_TOPICS
    )
    (out / "asyncapi.json").write_text("{}")
    stale = run(["schemas", "--check", "--out", str(out)], cli_env)
    assert stale.returncode == 1 and "asyncapi.json" in stale.stderr


def test_broker_command_creates_topics_and_stops_cleanly(
    cli_env: dict[str, str], prefix: str
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    async def list_topics(bootstrap: str) -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    port = free_port()
    proc = subprocess.Popen(
        [CLICKTUNE, "broker", "--port", str(port)],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(2)]
        assert f"127.0.0.1:{port}" in banner[1], banner
        topics = asyncio.run(list_topics(f"127.0.0.1:{port}"))
        assert {prefix + t.name for t in ALL_TOPICS} <= topics
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "broker stopped" in out
    assert "Traceback" not in err
    # The broker process is gone too: the port is free again.
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


async def test_status_and_cancel_commands(
    cli_env: dict[str, str], settings: Settings, redis_client
) -> None:
    from consumer.entries import to_entry
    from consumer.store import PartitionBatch, RedisStore
    from schemas import ReleaseEvent, SearchEvent
    from schemas import decode as decode_event
    from schemas.topics import STATUS

    s = settings.model_copy(update={"redis_key_prefix": settings.topic_prefix})
    env = {**cli_env, "CLICKTUNE_REDIS_KEY_PREFIX": s.redis_key_prefix}
    store = RedisStore(redis_client, s)
    search = SearchEvent.create(session_id="a", query="q", results=[{"item_id": "i"}])
    await store.apply([PartitionBatch("ev:0", [to_entry(0, search)])])
    release = ReleaseEvent.create()
    await store.apply([PartitionBatch("rel:0", [to_entry(0, release, raw=b"{}")])])
    listed = run(["status"], env)
    assert listed.returncode == 0 and "task-b000001" in listed.stdout and "pending" in listed.stdout
    one = run(["status", "task-b000001", "--json"], env)
    assert json.loads(one.stdout)["status"] == "pending"
    canceled = run(["cancel", "task-b000001"], env)
    assert canceled.returncode == 0, canceled.stderr
    assert json.loads(run(["status", "task-b000001", "--json"], env).stdout)["status"] == (
        "canceled"
    )
    [event] = await read_topic(s, STATUS, 1)
    assert decode_event(STATUS, event.value).status == "canceled"
    again = run(["cancel", "task-b000001"], env)
    assert again.returncode == 1 and "already canceled" in again.stderr
    missing = run(["status", "task-nope"], env)
    assert missing.returncode == 1 and missing.stderr.startswith("clicktune: error: no task")
    for key in [k async for k in redis_client.scan_iter(f"{s.redis_key_prefix}*")]:
        await redis_client.delete(key)


def test_a_killed_broker_command_leaves_no_broker_behind(cli_env: dict[str, str]) -> None:
    import time

    port = free_port()
    proc = subprocess.Popen(
        [CLICKTUNE, "broker", "--port", str(port), "--no-create-topics"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    assert f"127.0.0.1:{port}" in proc.stdout.readline()
    proc.kill()  # SIGKILL: no clean-up code runs in clicktune itself
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.1)
    raise AssertionError("the broker outlived the killed command")
