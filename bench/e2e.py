"""End to end: seconds from a ``release`` event to ``model_ready``, split by stage.

    python bench/e2e.py                          # 1,000 sessions (about 4 min on 2 CPU cores)
    python bench/e2e.py --sessions 1000 10000    # both sizes of the issue (10k: see docs)

For each size: an embedded broker, Redis (CLICKTUNE_REDIS_URL, default 127.0.0.1:6379), MLflow
on a fresh temporary sqlite store (so every size is a method's first iteration, from the base
model), and the real services in this process: the consumer (``ClickstreamConsumer``) and a
trainer (``TrainerWorker``). The demo's traffic (``producer/sample_catalog.py`` catalog,
``ClickSimulator`` users on the base model's ranking) is published and batched first; then
the clock starts, a ``release`` is published, and it stops when a ``model_ready`` subscriber
receives the event. Search budget: ``max_evals`` trials (default 2) of ``epochs`` (default 1)
over the default grid, the first trial the default recipe (``trainer/params.py``), the
second a TPE draw; sequence length 64; ``min_improvement`` is -1 so a model is always
published and the time covers registration. After the clock, the published model and the base
model are scored on the generated catalog's hidden grades (``producer.catalog_grades``): the
bench forces publication, so this says whether what it published is really better.

The split by stage is the trainer's own (``trainer.stages``), read back from MLflow: the
iteration's experiment tag ``clicktune.stage_seconds`` and each trial run's ``stage_*_s``
metrics. "outside the trainer" is the rest of the latency: the consumer freezing the batch
and emitting the task, the worker picking it up, publishing and receiving ``model_ready``.
Writes bench/results/e2e.json.
"""

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mlflow  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from mlflow.entities import ViewType  # noqa: E402
from redis_cleanup import drop_keys  # noqa: E402  (bench/, the script's own folder)

from consumer.keys import Keys  # noqa: E402
from consumer.service import ClickstreamConsumer  # noqa: E402
from consumer.tasks import TaskStore  # noqa: E402
from producer.broker import EmbeddedBroker  # noqa: E402
from producer.catalog_grades import base_and_published  # noqa: E402
from producer.demo import _base_ranker  # noqa: E402
from producer.publisher import ClickstreamPublisher  # noqa: E402
from producer.sample_catalog import build_catalog  # noqa: E402
from producer.settings import Settings  # noqa: E402
from producer.simulator import ClickSimulator  # noqa: E402
from producer.subscriber import subscribe_model_ready  # noqa: E402
from trainer.model_source import offline  # noqa: E402
from trainer.params import FineTuningParams  # noqa: E402
from trainer.ranking_data import load_ranking_data  # noqa: E402
from trainer.search import resolve_device  # noqa: E402
from trainer.tracker import STAGES_TAG, TASK_TAG  # noqa: E402
from trainer.worker import TrainerWorker  # noqa: E402


def _settings(bootstrap: str, args: argparse.Namespace, work: Path) -> Settings:
    prefix = f"e2e{uuid.uuid4().hex[:8]}."
    settings = Settings.load(
        kafka_bootstrap_servers=bootstrap,
        kafka_enable_idempotence=False,  # tansu has no InitProducerId
        topic_prefix=prefix,
        redis_key_prefix=f"bench:{prefix}",
        consumer_group=f"{prefix}consumer",
        trainer_group=f"{prefix}trainers",
        metrics_port=0,
        trainer_metrics_port=0,
        mlflow_tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
        work_dir=work / "work",
        max_evals=args.max_evals,
        epochs=args.epochs,
        device=args.device,
        min_improvement=-1.0,  # always ship: the timing covers registration and model_ready
    )
    return settings


async def _wait_batched(s: Settings, sessions: int) -> None:
    client = aioredis.from_url(s.redis_url)
    keys = Keys(s.redis_key_prefix)
    deadline = time.monotonic() + 600
    try:
        while True:
            bid = await client.get(keys.open_batch)
            if (
                bid
                and int(await client.hget(keys.batch(bid.decode()), "sessions") or 0) >= sessions
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the consumer did not batch the sessions in time")
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


def _stages_from_mlflow(s: Settings, task_id: str) -> dict[str, Any]:
    client = mlflow.MlflowClient(tracking_uri=s.mlflow_tracking_uri)
    [experiment] = client.search_experiments(
        view_type=ViewType.ALL, filter_string=f"tags.`{TASK_TAG}` = '{task_id}'"
    )
    tagged = json.loads(experiment.tags[STAGES_TAG])
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    trials = [
        {
            k[len("stage_") : -len("_s")]: v
            for k, v in r.data.metrics.items()
            if k.startswith("stage_") and k.endswith("_s")
        }
        for r in runs
    ]
    params = [
        {k: r.data.params[k] for k in ("learning_rate", "batch_size", "hard_negatives")}
        for r in runs
    ]
    return {
        "task": tagged["task"],
        "trials_total": tagged["trials"],
        "trials": trials,
        "trial_params": params,
    }


async def run_size(broker: EmbeddedBroker, sessions: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="clicktune-e2e-") as tmp:
        s = _settings(broker.bootstrap_servers, args, Path(tmp))
        # A deployed tracking store exists already: create this one's tables (seconds of
        # schema migrations on a fresh sqlite file) before the clock starts.
        mlflow.MlflowClient(tracking_uri=s.mlflow_tracking_uri).search_experiments()
        catalog, judgments = build_catalog()
        rank = await asyncio.to_thread(_base_ranker, catalog, s.base_model)
        sim = ClickSimulator(catalog, judgments, rank, seed=7)
        consumer = ClickstreamConsumer(s, serve_health=False)
        await consumer.start()
        consuming = asyncio.create_task(consumer.run())
        worker = TrainerWorker(s, serve_health=False, max_tasks=1)
        await worker.start()
        training = asyncio.create_task(worker.run())
        try:
            started = time.perf_counter()
            async with ClickstreamPublisher(s) as publisher:
                for item in sim.items():
                    await publisher.send(item)
                for events in sim.sessions(sessions):
                    for event in events:
                        await publisher.send(event)
                await publisher.flush()
                await _wait_batched(s, sessions)
                ingest_s = time.perf_counter() - started
                # The worker has joined its group: its start-up is not release-to-model time.
                while worker.consumer is None or not worker.consumer.assignment():  # noqa: ASYNC110
                    await asyncio.sleep(0.1)  # aiokafka has no event for "assigned"
                async with subscribe_model_ready(s, group_id=None) as ready:
                    t0 = time.perf_counter()
                    release, _ = await publisher.release(metadata={"requested_by": "bench"})
                    event = await asyncio.wait_for(anext(ready), timeout=args.timeout)
                    latency = time.perf_counter() - t0
            await asyncio.wait_for(training, timeout=120)
            client = aioredis.from_url(s.redis_url)
            record = await TaskStore(client, s.redis_key_prefix).get(event.task_id)
            data = await load_ranking_data(
                client, s.redis_key_prefix, event.batch_id, test_fraction=s.test_fraction
            )
            await client.aclose()
            stages = _stages_from_mlflow(s, event.task_id)
            # After the clock: the published model against the catalog's hidden grades.
            graded = await asyncio.to_thread(base_and_published, s, event, catalog, judgments)
        finally:
            worker.request_stop()
            consumer.request_stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consuming, 30)
            if not training.done():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(training, 60)
            await drop_keys(s.redis_url, s.redis_key_prefix)
    in_trainer = sum(stages["task"].values()) + sum(stages["trials_total"].values())
    return {
        "sessions": sessions,
        "batch": data.stats,
        # The default recipe's pairs; a TPE draw with hard negatives trains more rows.
        "train_pairs_per_trial": len(
            data.pairs(data.train, max_negatives=FineTuningParams().hard_negatives)
        ),
        "release_to_model_ready_s": round(latency, 2),
        "ingest_s": round(ingest_s, 1),
        "stages_s": stages,
        "outside_trainer_s": round(latency - in_trainer, 2),
        "status_detail": record.detail if record else "",
        "metrics": {"baseline": event.metrics.baseline, "tuned": event.metrics.tuned},
        "graded_ndcg@10": {
            "base": asdict(graded[0]),
            "published": asdict(graded[1]),
        },
        "release_id": release.event_id,
    }


def _rows(result: dict) -> list[tuple[str, float]]:
    """(stage, seconds) in pipeline order, trials one by one."""
    task = result["stages_s"]["task"]
    rows = [(k, task[k]) for k in ("read_batch", "mlflow", "load_model", "build_data") if k in task]
    if "baseline" in task:
        rows.append(("evaluation: baseline", task["baseline"]))
    for n, trial in enumerate(result["stages_s"]["trials"], 1):
        for kind in ("mlflow", "setup", "train", "eval", "log_model"):
            if kind in trial:
                label = "evaluation" if kind == "eval" else kind
                rows.append((f"trial {n}: {label}", trial[kind]))
    rows += [(k, task[k]) for k in ("register", "fetch_model") if k in task]
    known = {"read_batch", "mlflow", "load_model", "build_data", "baseline", "register"}
    rows += [(k, v) for k, v in task.items() if k not in known | {"fetch_model"}]
    rows.append(
        ("outside the trainer (consumer, task pick-up, Kafka)", result["outside_trainer_s"])
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1_000])
    parser.add_argument("--max-evals", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per size")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    offline()
    args.device = resolve_device(args.device)
    results = []
    with EmbeddedBroker() as broker:
        for n in args.sessions:
            result = asyncio.run(run_size(broker, n, args))
            results.append(result)
            print(
                f"\n{n} sessions ({result['train_pairs_per_trial']} training pairs per trial, "
                f"{args.max_evals} trials x {args.epochs} epoch, {args.device}): "
                f"release -> model_ready {result['release_to_model_ready_s']} s"
            )
            print("stage | seconds")
            for stage, seconds in _rows(result):
                print(f"{stage} | {seconds:.2f}")
            for n, params in enumerate(result["stages_s"]["trial_params"], 1):
                print(f"trial {n} parameters: {params}")
            print("status detail:", result["status_detail"])
            g = result["graded_ndcg@10"]
            print(
                "on the catalog's hidden grades, NDCG@10 base -> published: "
                f"{g['base']['ndcg']:.4f} -> {g['published']['ndcg']:.4f} (all queries), "
                f"{g['base']['ndcg_held_out']:.4f} -> {g['published']['ndcg_held_out']:.4f} "
                "(held-out queries)"
            )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "e2e.json").write_text(
        json.dumps(
            {
                "max_evals": args.max_evals,
                "epochs": args.epochs,
                "device": args.device,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
