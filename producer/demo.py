"""`clicktune demo`: the whole loop on embedded defaults, in minutes on a laptop CPU.

Embedded broker, Redis (the one at CLICKTUNE_REDIS_URL, or a local redis-server started on a
free port), MLflow in ./.clicktune/, the consumer and the trainer as subprocesses with their
own logs, a simulated clickstream over a generated catalog (the base model ranks it, users
click by a hidden relevance), a release, and the result.
"""

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from producer.broker import EmbeddedBroker, free_port
from producer.catalog_grades import base_and_published
from producer.publisher import ClickstreamPublisher
from producer.redis_client import connect_redis
from producer.sample_catalog import build_catalog
from producer.settings import Settings, redact_url
from producer.simulator import ClickSimulator
from producer.subscriber import subscribe_model_ready, subscribe_status
from schemas.model_ready import ModelReadyEvent

HOME = Path(".clicktune")


class DemoError(RuntimeError):
    pass


#: Redis settings that belong to the configured Redis, not to the demo's own redis-server.
_REDIS_CREDENTIALS = (
    "redis_username",
    "redis_password",
    "redis_ssl_ca_file",
    "redis_ssl_certfile",
    "redis_ssl_keyfile",
    "redis_ssl_key_password",
)


async def _redis(settings: Settings, logs: Path) -> tuple[Settings, subprocess.Popen[bytes] | None]:
    """The configured Redis (with its credentials and TLS) if it answers, else a private
    redis-server on a free port (no password: it only listens on loopback)."""
    client = connect_redis(settings, socket_connect_timeout=2)
    try:
        await client.ping()
        return settings, None
    except Exception:
        pass
    finally:
        await client.aclose()
    binary = shutil.which("redis-server")
    if binary is None:
        raise DemoError(
            f"Redis does not answer at {redact_url(settings.redis_url)} and redis-server is "
            "not installed: "
            "apt-get install redis-server (or set CLICKTUNE_REDIS_URL)"
        )
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=(logs / "redis.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    own = settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{port}/0",
            **dict.fromkeys(_REDIS_CREDENTIALS),
        }
    )
    for _ in range(50):
        client = connect_redis(own)
        try:
            await client.ping()
            return own, proc
        except Exception:
            await asyncio.sleep(0.1)
        finally:
            await client.aclose()
    raise DemoError("redis-server did not start")


def _base_ranker(catalog: dict[str, str], base_model: str):
    from sentence_transformers import SentenceTransformer

    from trainer.model_source import base_model_path, offline

    offline()
    model = SentenceTransformer(base_model_path(base_model), device="cpu")
    ids = list(catalog)
    matrix = model.encode(
        [catalog[i] for i in ids],
        normalize_embeddings=True,
        batch_size=128,
        show_progress_bar=False,
    )

    def rank(query: str) -> list[str]:
        scores = matrix @ model.encode([query], normalize_embeddings=True)[0]
        return [ids[k] for k in (-scores).argsort()[:20]]

    return rank


async def run_demo(
    settings: Settings, *, sessions: int, keep_running: bool, console: Console
) -> int:
    # SIGTERM ends the demo like Ctrl-C: children and the broker are stopped on the way out.
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    HOME.mkdir(exist_ok=True)  # noqa: ASYNC240 - once, at start-up
    logs = HOME / "logs"
    logs.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    with EmbeddedBroker(log_file=logs / "broker.log") as broker:
        settings, own_redis = await _redis(settings, logs)
        redis_url = settings.redis_url
        if own_redis is not None:
            procs.append(own_redis)
        run_id = time.strftime("%Y%m%d%H%M%S")
        s = settings.model_copy(
            update={
                "kafka_bootstrap_servers": broker.bootstrap_servers,
                "kafka_enable_idempotence": False,
                "redis_url": redis_url,
                "redis_key_prefix": f"clicktune-demo-{run_id}:",
                "mlflow_tracking_uri": f"sqlite:///{(HOME / 'mlflow.db').resolve()}",
                "work_dir": HOME / "work",
            }
        )
        consumer_port, trainer_port = free_port(), free_port()
        inherited = dict(os.environ)
        if own_redis is not None:  # the children must not bring the configured Redis's secrets
            for name in _REDIS_CREDENTIALS:
                inherited.pop(f"CLICKTUNE_{name.upper()}", None)
        env = {
            **inherited,
            "CLICKTUNE_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
            "CLICKTUNE_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "CLICKTUNE_REDIS_URL": redis_url,
            "CLICKTUNE_REDIS_KEY_PREFIX": s.redis_key_prefix,
            "CLICKTUNE_MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
            "CLICKTUNE_WORK_DIR": str(s.work_dir),
            "CLICKTUNE_METRICS_PORT": str(consumer_port),
            "CLICKTUNE_TRAINER_METRICS_PORT": str(trainer_port),
            "CLICKTUNE_MAX_EVALS": str(s.max_evals),
            "CLICKTUNE_EPOCHS": str(s.epochs),
        }
        exe = str(Path(sys.executable).with_name("clicktune"))
        console.print(
            f"[bold]broker[/] {broker.bootstrap_servers}  [bold]redis[/] {redact_url(redis_url)}"
            f"  [bold]mlflow[/] {s.mlflow_tracking_uri}  [bold]logs[/] {logs}/"
        )
        try:
            for name, args in (("consumer", ["-v", "consume"]), ("trainer", ["-v", "train"])):
                procs.append(
                    subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
                        [exe, *args],
                        env=env,
                        stdout=(logs / f"{name}.log").open("wb"),
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            result = await _drive(s, sessions, console)
            if keep_running:
                console.print(
                    f"\nServices keep running. MLflow UI: [bold]mlflow ui --backend-store-uri "
                    f"{s.mlflow_tracking_uri}[/]  consumer metrics: http://127.0.0.1:"
                    f"{consumer_port}/metrics  trainer metrics: http://127.0.0.1:{trainer_port}"
                    f"/metrics  broker: {broker.bootstrap_servers}\nCtrl-C stops everything."
                )
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.Event().wait()
            return result
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def _drive(s: Settings, sessions: int, console: Console) -> int:
    catalog, judgments = build_catalog()
    with console.status("ranking the catalog with the base model"):
        rank = await asyncio.to_thread(_base_ranker, catalog, s.base_model)
    sim = ClickSimulator(catalog, judgments, rank, seed=7)
    client = connect_redis(s)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with bar:
        published = bar.add_task("sessions published", total=sessions)
        batched = bar.add_task("sessions in the open batch", total=sessions)
        async with ClickstreamPublisher(s) as publisher:
            for item in sim.items():
                await publisher.send(item)
            for events in sim.sessions(sessions):
                for event in events:
                    await publisher.send(event)
                bar.advance(published)
            await publisher.flush()
            deadline = time.monotonic() + 180
            while True:
                bid = await client.get(f"{s.redis_key_prefix}batch:open")
                count = (
                    int(
                        await client.hget(f"{s.redis_key_prefix}batch:{bid.decode()}", "sessions")
                        or 0
                    )
                    if bid
                    else 0
                )
                bar.update(batched, completed=count)
                if count >= sessions:
                    break
                if time.monotonic() > deadline:
                    raise DemoError(
                        "the consumer did not batch the sessions in time "
                        "(see .clicktune/logs/consumer.log)"
                    )
                await asyncio.sleep(0.3)
            event, _ = await publisher.release(
                idempotency_key=f"demo-{s.redis_key_prefix}",
                metadata={"requested_by": "clicktune demo"},
            )
    await client.aclose()
    console.print(
        f"released the batch ({sessions} sessions); training with "
        f"{s.max_evals} trials x {s.epochs} epoch(s)…"
    )
    return await _follow(s, console, grades=(catalog, judgments))


async def _follow(
    s: Settings,
    console: Console,
    grades: tuple[dict[str, str], dict[str, Any]] | None = None,
) -> int:
    status_task = asyncio.create_task(_print_statuses(s, console))
    try:
        async with asyncio.timeout(1800), subscribe_model_ready(s, group_id=None) as ready:
            outcome = asyncio.create_task(anext(ready))
            try:
                done, _ = await asyncio.wait(
                    {outcome, status_task}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                # Before the subscription closes under it (Ctrl-C): no orphaned task error.
                if not outcome.done():
                    outcome.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await outcome
            if outcome not in done:
                return 1 if status_task.result() == "error" else 0
            event = outcome.result()
    finally:
        status_task.cancel()
    table = Table(title=f"{event.model_name} v{event.model_version}  ({event.model_uri})")
    table.add_column("metric (held-out queries)")
    table.add_column("baseline", justify="right")
    table.add_column("tuned", justify="right")
    table.add_column("change", justify="right")
    for name in sorted(event.metrics.tuned):
        base, tuned = event.metrics.baseline.get(name, 0.0), event.metrics.tuned[name]
        table.add_row(name, f"{base:.4f}", f"{tuned:.4f}", f"{tuned - base:+.4f}")
    console.print(table)
    if grades is not None:
        await _print_graded(s, event, grades, console)
    console.print(
        f"load it: mlflow.sentence_transformers.load_model('{event.model_uri}') with "
        f"MLFLOW_TRACKING_URI={s.mlflow_tracking_uri}; sha256 {event.artifact_sha256}"
    )
    return 0


async def _print_graded(
    s: Settings,
    event: ModelReadyEvent,
    grades: tuple[dict[str, str], dict[str, Any]],
    console: Console,
) -> None:
    """Click metrics favour the ranking users were shown (position bias); the grades the
    simulated users clicked by say whether the new model really ranks better."""
    catalog, judgments = grades
    try:
        with console.status("scoring both models on the catalog's hidden grades"):
            base, tuned = await asyncio.to_thread(base_and_published, s, event, catalog, judgments)
    except Exception as exc:  # the model shipped either way; say why there is no score
        console.print(f"[yellow]not scored on the hidden grades:[/] {exc}")
        return
    console.print(
        f"on the simulator's hidden grades, ranking all {len(catalog):,} items: NDCG@10 "
        f"base {base.ndcg:.4f} -> tuned [bold]{tuned.ndcg:.4f}[/] over all "
        f"{tuned.queries} queries; {base.ndcg_held_out:.4f} -> "
        f"[bold]{tuned.ndcg_held_out:.4f}[/] over the {tuned.held_out} queries the "
        "trainer held out"
    )


async def _print_statuses(s: Settings, console: Console) -> str:
    async with subscribe_status(s, group_id=None) as statuses:
        async for status in statuses:
            console.print(f"task {status.task_id}: [bold]{status.status.value}[/] {status.detail}")
            if status.status.is_final and not status.detail.startswith("champion"):
                return status.status.value
    return "unknown"
