"""Redis with a password, an ACL user limited to clicktune's key prefix, and TLS (rediss://).

Exercised for real: a private ``redis-server`` (7.x) started on free ports with
``--requirepass``, a TLS port whose certificate comes from a throwaway CA, and ACL users made
with :func:`producer.redis_client.acl_rules`. Against it run the consumer service (events
from the embedded broker applied, a release turned into a task), the Redis side of the trainer
(ranking data, task status, leases, batch expiry) and ``clicktune status``/``cancel``, with
credentials from settings and secret files; ``ACL LOG`` must then hold no denial. Users with
the wrong password, no access to the prefix, or no script commands get a clear error at
start-up instead of a retry loop or a failure at the first record.
"""

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError

from consumer.keys import Keys
from consumer.service import ClickstreamConsumer
from consumer.tasks import TaskStore, finish_task
from producer import synthetic
from producer.broker import free_port
from producer.redis_client import REQUIRED_COMMANDS, acl_rules, connect_redis, redis_kwargs
from producer.settings import Settings
from schemas import ReleaseEvent, decode
from schemas.task import TaskStatus
from schemas.topics import TASKS
from tests.conftest import read_topic
from tests.consumer.conftest import consumed, publish, running, wait_until
from tests.tls_certs import KEY_PASSWORD, Certs, make_certs
from trainer.ranking_data import load_ranking_data

CLICKTUNE = str(Path(sys.executable).with_name("clicktune"))
ADMIN_PASSWORD = "admin-pw-51c0"
USER_PASSWORD = "clicktune-pw-9e4a"


@dataclass
class PrivateRedis:
    port: int
    tls_port: int

    def admin(self) -> aioredis.Redis:
        return aioredis.from_url(f"redis://127.0.0.1:{self.port}/0", password=ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("redis-certs"))


@pytest.fixture(scope="module")
def private_redis(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    work = tmp_path_factory.mktemp("private-redis")
    port, tls_port = free_port(), free_port()
    args = [
        "redis-server",
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(certs.server_cert),
        "--tls-key-file", str(certs.server_key),
        "--tls-ca-cert-file", str(certs.ca),
        "--tls-auth-clients", "optional",
        "--requirepass", ADMIN_PASSWORD,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(work),
    ]  # fmt: skip
    log = (work / "redis.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            ping = subprocess.run(
                ["redis-cli", "-p", str(port), "--no-auth-warning", "-a", ADMIN_PASSWORD, "ping"],
                capture_output=True,
                text=True,
                check=False,
            )
            if ping.stdout.strip() == "PONG":
                break
            assert proc.poll() is None, (work / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
        yield PrivateRedis(port, tls_port)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
async def acl_user(private_redis: PrivateRedis, prefix: str) -> AsyncIterator[str]:
    """An ACL user that may only run clicktune's commands on keys under ``prefix``."""
    name = f"clicktune-{prefix.rstrip('.')}"
    admin = private_redis.admin()
    await admin.execute_command(
        "ACL", "SETUSER", name, "reset", "on", f">{USER_PASSWORD}", *acl_rules(prefix)
    )
    await admin.execute_command("ACL", "LOG", "RESET")
    yield name
    await admin.execute_command("ACL", "DELUSER", name)
    for key in [k async for k in admin.scan_iter(f"{prefix}*", count=1000)]:
        await admin.delete(key)
    await admin.aclose()


def _secrets(tmp_path: Path, password: str) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir(exist_ok=True)
    (directory / "CLICKTUNE_REDIS_PASSWORD").write_text(password + "\n")
    return directory


def _as_user(
    consumer_settings: Settings, url: str, user: str, secrets: Path, **extra: object
) -> Settings:
    """The consumer's settings, loaded as a deployment would: the password from a file."""
    fields = consumer_settings.model_dump(exclude={"redis_password"})
    fields.update(redis_url=url, redis_username=user, secrets_dir=secrets, **extra)
    return Settings.load(**fields)


async def _denials(private_redis: PrivateRedis) -> list[str]:
    admin = private_redis.admin()
    try:
        entries = await admin.execute_command("ACL", "LOG")
    finally:
        await admin.aclose()
    out = []
    for entry in entries:  # redis-py parses each entry into a dict
        fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in entry.items()}
        out.append(f"{fields.get('reason')} {fields.get('object')} {fields.get('username')}")
    return out


async def test_consumer_trainer_and_cli_work_as_a_prefix_limited_acl_user(
    private_redis: PrivateRedis,
    acl_user: str,
    consumer_settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    prefix: str,
) -> None:
    secrets = _secrets(tmp_path, USER_PASSWORD)
    s = _as_user(consumer_settings, f"redis://127.0.0.1:{private_redis.port}/0", acl_user, secrets)
    assert s.redis_password is not None and USER_PASSWORD not in repr(s)
    events = list(synthetic.sessions(40, seed=3))
    async with running(s) as service:
        await publish(s, events)
        await wait_until(lambda: _at_least(consumed(service), len(events)), what="applied")
        await publish(s, [ReleaseEvent.create(idempotency_key="acl")])
        [record] = await read_topic(s, TASKS, 1)
    task = decode(TASKS, record.value)
    assert task.session_count == 40

    # The trainer's side, as the same user.
    client = connect_redis(s)
    try:
        data = await load_ranking_data(client, prefix, task.batch_id)
        assert data.stats["sessions"] == 40
        store = TaskStore(client, prefix)
        assert [r.task_id for r in await store.recent()] == [task.task_id]
        await store.set_status(task.task_id, TaskStatus.PROCESSING, "search started")
        lease = Keys(prefix).task(task.task_id) + ":lease"
        assert await client.set(lease, "1", nx=True, ex=60)
        assert await client.expire(lease, 60) and await client.exists(lease)
        await client.delete(lease)
        # ... and nothing outside the prefix.
        with pytest.raises(NoPermissionError):
            await client.get("someone-else:key")
    finally:
        await client.aclose()

    # The CLI, with the same settings from the environment and the secrets directory.
    env = {
        **cli_env,
        "CLICKTUNE_REDIS_URL": s.redis_url,
        "CLICKTUNE_REDIS_USERNAME": acl_user,
        "CLICKTUNE_SECRETS_DIR": str(secrets),
        "CLICKTUNE_REDIS_KEY_PREFIX": prefix,
    }
    shown = await _cli(["status", task.task_id, "--json"], env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "processing"
    canceled = await _cli(["cancel", task.task_id], env)
    assert canceled.returncode == 0, canceled.stderr

    client = connect_redis(s)
    try:
        record_after = await finish_task(
            client, prefix, task.task_id, TaskStatus.CANCELED, "done", retention_s=60
        )
        assert record_after.status is TaskStatus.CANCELED
    finally:
        await client.aclose()
    # Only the probe outside the prefix was refused: the command list is complete.
    denials = await _denials(private_redis)
    assert len(denials) == 1 and "someone-else:key" in denials[0], denials


async def _at_least(value: float, n: int) -> bool:
    return value >= n


async def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [CLICKTUNE, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_wrong_password_fails_at_once_not_in_a_retry_loop(
    private_redis: PrivateRedis,
    acl_user: str,
    consumer_settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    s = _as_user(
        consumer_settings,
        f"redis://127.0.0.1:{private_redis.port}/0",
        acl_user,
        _secrets(tmp_path, "not-the-password"),
    )
    service = ClickstreamConsumer(s, serve_health=False)
    started = time.monotonic()
    with pytest.raises(AuthenticationError):
        async with asyncio.timeout(20):
            await service.start()
    await service.close()
    assert time.monotonic() - started < 10
    env = {
        **cli_env,
        "CLICKTUNE_REDIS_URL": s.redis_url,
        "CLICKTUNE_REDIS_USERNAME": acl_user,
        "CLICKTUNE_SECRETS_DIR": str(tmp_path / "secrets"),
        "CLICKTUNE_METRICS_PORT": "0",
    }
    for command in (["consume"], ["status"]):
        result = await _cli(command, env)
        assert result.returncode == 1, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Redis refused the credentials" in lines[0], result.stderr
        assert "not-the-password" not in result.stderr


@pytest.mark.parametrize(
    ("rules", "says"),
    [
        (acl_rules("elsewhere:"), "no permissions to access one of the keys"),
        (
            [r for r in acl_rules("PREFIX") if r not in ("+evalsha", "+eval")],
            "no permissions to run the 'evalsha' command",
        ),
    ],
    ids=["keys-outside-the-prefix", "no-scripts"],
)
async def test_a_user_lacking_access_gets_a_clear_error_at_start_up(
    private_redis: PrivateRedis,
    consumer_settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    prefix: str,
    rules: list[str],
    says: str,
) -> None:
    name = f"lacking-{prefix.rstrip('.')}"
    admin = private_redis.admin()
    rules = [r.replace("PREFIX", prefix) for r in rules]
    await admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{USER_PASSWORD}", *rules)
    try:
        secrets = _secrets(tmp_path, USER_PASSWORD)
        s = _as_user(consumer_settings, f"redis://127.0.0.1:{private_redis.port}/0", name, secrets)
        service = ClickstreamConsumer(s, serve_health=False)
        with pytest.raises(NoPermissionError, match=says):
            async with asyncio.timeout(20):
                await service.start()
        await service.close()
        env = {
            **cli_env,
            "CLICKTUNE_REDIS_URL": s.redis_url,
            "CLICKTUNE_REDIS_USERNAME": name,
            "CLICKTUNE_SECRETS_DIR": str(secrets),
            "CLICKTUNE_REDIS_KEY_PREFIX": prefix,
            "CLICKTUNE_METRICS_PORT": "0",
        }
        result = await _cli(["consume"], env)
        assert result.returncode == 1, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "lacks a permission" in lines[0] and says in lines[0], lines
    finally:
        await admin.execute_command("ACL", "DELUSER", name)
        await admin.aclose()


# --- TLS -------------------------------------------------------------------------------------


async def test_consumer_over_rediss_with_the_ca_from_settings(
    private_redis: PrivateRedis,
    acl_user: str,
    consumer_settings: Settings,
    certs: Certs,
    tmp_path: Path,
) -> None:
    url = f"rediss://127.0.0.1:{private_redis.tls_port}/0"
    s = _as_user(
        consumer_settings,
        url,
        acl_user,
        _secrets(tmp_path, USER_PASSWORD),
        redis_ssl_ca_file=certs.ca,
    )
    events = list(synthetic.sessions(10, seed=4))
    async with running(s) as service:
        await publish(s, events)
        await wait_until(lambda: _at_least(consumed(service), len(events)), what="applied")
    admin = private_redis.admin()
    try:
        sessions = [k async for k in admin.scan_iter(f"{s.redis_key_prefix}session:*")]
        assert len(sessions) == 10
        # Those connections were TLS ones: the server counts them apart.
        info = await admin.info("stats")
        assert "total_connections_received" in info
    finally:
        await admin.aclose()


async def test_rediss_verifies_the_server_and_supports_client_certificates(
    private_redis: PrivateRedis, acl_user: str, certs: Certs, tmp_path: Path
) -> None:
    base = {
        "redis_url": f"rediss://127.0.0.1:{private_redis.tls_port}/0",
        "redis_username": acl_user,
        "redis_password": USER_PASSWORD,
    }
    trusted = Settings.load(**base, redis_ssl_ca_file=certs.ca)
    other = Settings.load(**base, redis_ssl_ca_file=certs.other_ca)
    mutual = Settings.load(
        **base,
        redis_ssl_ca_file=certs.ca,
        redis_ssl_certfile=certs.client_cert,
        redis_ssl_keyfile=certs.client_key,
        redis_ssl_key_password=KEY_PASSWORD,
    )
    for ok in (trusted, mutual):
        client = connect_redis(ok, socket_connect_timeout=5)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
    client = connect_redis(other, socket_connect_timeout=5)
    try:
        with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.ping()
    finally:
        await client.aclose()
    # Plain TCP to the TLS port: the server never answers a Redis reply.
    plain = connect_redis(
        Settings.load(redis_url=base["redis_url"].replace("rediss", "redis")),
        socket_connect_timeout=2,
        socket_timeout=2,
    )
    try:
        with pytest.raises(RedisConnectionError):
            await plain.ping()
    finally:
        await plain.aclose()


# --- settings --------------------------------------------------------------------------------


def test_redis_settings_map_to_client_arguments(certs: Certs, tmp_path: Path) -> None:
    secrets = _secrets(tmp_path, "from-a-file")
    s = Settings.load(
        redis_url="rediss://cache:6380/1",
        redis_username="clicktune",
        secrets_dir=secrets,
        redis_ssl_ca_file=certs.ca,
        redis_ssl_certfile=certs.client_cert,
        redis_ssl_keyfile=certs.client_key,
        redis_ssl_key_password=KEY_PASSWORD,
        redis_ssl_check_hostname=False,
    )
    assert redis_kwargs(s) == {
        "username": "clicktune",
        "password": "from-a-file",
        "ssl_check_hostname": False,
        "ssl_ca_certs": str(certs.ca),
        "ssl_certfile": str(certs.client_cert),
        "ssl_keyfile": str(certs.client_key),
        "ssl_password": KEY_PASSWORD,
    }
    assert "from-a-file" not in repr(s) and KEY_PASSWORD not in repr(s)
    assert redis_kwargs(Settings.load()) == {}
    # A password in the URL is a secret too: never printed.
    in_url = Settings.load(redis_url="redis://clicktune:url-secret@cache:6379/0")
    assert "url-secret" not in repr(in_url) and "url-secret" not in str(in_url)
    assert "redis://clicktune:***@cache:6379/0" in repr(in_url)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"redis_ssl_ca_file": "CA"}, "need a rediss:// redis_url"),
        ({"redis_url": "rediss://h:1", "redis_ssl_certfile": "CA"}, "go together"),
        ({"redis_url": "rediss://h:1", "redis_ssl_ca_file": "/nonexistent"}, "no such file"),
        ({"redis_url": "redis://:pw@h:1", "redis_password": "pw"}, "given twice"),
    ],
)
def test_inconsistent_redis_settings_are_refused(
    fields: dict[str, str], says: str, certs: Certs
) -> None:
    fields = {k: str(certs.ca) if v == "CA" else v for k, v in fields.items()}
    with pytest.raises(ValidationError, match=says):
        Settings.load(**fields)


def test_the_documented_acl_is_the_command_list() -> None:
    rules = acl_rules("clicktune:")
    assert rules[:4] == ["resetkeys", "~clicktune:*", "resetchannels", "-@all"]
    assert {r[1:] for r in rules[4:]} == set(REQUIRED_COMMANDS)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert " ".join(rules) in readme.replace("\n", " ")
