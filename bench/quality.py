"""Learned quality on real relevance data: does the model really get better from clicks?

    python bench/quality.py                          # the reported run (whole catalog)
    python bench/quality.py --catalog-size 8000      # a quicker run on a catalog subset

Data: ../shared/data/homedepot/train.csv.zip (Home Depot product search relevance: product
titles, search terms, mean human grades 1-3). It is read from there and never copied.

1. Queries are split in half by a hash of the query (deterministic). Train queries: those
   with at least 3 judgements; test queries: those with at least 5.
2. The base model ranks the catalog for each train query; simulated users scan its top 20
   with the demo's click model (``producer/simulator.py``): examination rank^-0.8, click
   probability by grade (grade = 0/1/2/3 for mean relevance <1.5 / <2 / <2.5 / >=2.5;
   unjudged products are grade 0, clicked with probability 0.03), several sessions per query.
3. Those sessions go through the real pipeline: embedded broker -> consumer -> Redis ->
   release -> trainer (hyperopt over Lightning runs, MLflow on a temp sqlite store) ->
   ``model_ready``; the model is loaded from the event's MLflow URI.
4. Held-out test queries rank the **whole catalog** (or the subset, said in the output):
   NDCG@10 with gain = mean grade - 1 (unjudged: 0), MRR@10 and Recall@100 with relevant =
   mean grade >= 2.5, for (1) the base model, (2) clicktune's model, (3) a reference: the same
   clicks as (query, clicked title) pairs trained with sentence-transformers'
   SentenceTransformerTrainer + MultipleNegativesRankingLoss, library defaults.
5. A general slice: the half of the test queries least like any train query (max cosine
   similarity under the base model): the tuned model must not fall below the base there by
   more than --tolerance NDCG@10.

Prints the table and writes bench/results/quality.json.
"""

import argparse
import asyncio
import csv
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import time
import uuid
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from producer.broker import EmbeddedBroker  # noqa: E402
from producer.publisher import ClickstreamPublisher  # noqa: E402
from producer.settings import Settings  # noqa: E402
from producer.simulator import ClickSimulator  # noqa: E402
from schemas.clickstream import ClickEvent, SearchEvent  # noqa: E402
from trainer.metrics import MRR, NDCG, Recall  # noqa: E402
from trainer.model_source import base_model_path, offline  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "homedepot" / "train.csv.zip"
RESULTS = ROOT / "bench" / "results"
METRICS = (NDCG(10), MRR(10), Recall(100))
RELEVANT = 2.5


@dataclass
class Dataset:
    titles: dict[str, str]  # product uid -> title
    grades: dict[str, dict[str, float]]  # query -> product uid -> mean relevance (1..3)


def load(path: Path) -> Dataset:
    with zipfile.ZipFile(path) as zf, zf.open("train.csv") as raw:
        rows = csv.DictReader(io.TextIOWrapper(raw, encoding="latin-1"))
        titles: dict[str, str] = {}
        grades: dict[str, dict[str, float]] = defaultdict(dict)
        for row in rows:
            uid = row["product_uid"]
            titles[uid] = row["product_title"].strip()
            grades[row["search_term"].strip()][uid] = float(row["relevance"])
    return Dataset(titles, dict(grades))


def _bucket(query: str) -> float:
    digest = hashlib.blake2b(query.lower().encode(), digest_size=8, person=b"ct-bench").digest()
    return int.from_bytes(digest, "big") / 2**64


def split(data: Dataset, n_train: int, n_test: int) -> tuple[list[str], list[str]]:
    ordered = sorted(data.grades, key=_bucket)
    train = [q for q in ordered if _bucket(q) < 0.5 and len(data.grades[q]) >= 3]
    test = [q for q in ordered if _bucket(q) >= 0.5 and len(data.grades[q]) >= 5]
    return train[:n_train], test[:n_test]


def click_grade(relevance: float) -> int:
    return 0 if relevance < 1.5 else 1 if relevance < 2.0 else 2 if relevance < 2.5 else 3


def base_cache(model_path: Path, model: Any, ids: list[str], titles: dict[str, str]) -> Path:
    """Where the base model's catalog embeddings are kept between runs.

    The base model never changes between runs, and encoding the whole catalog on a CPU takes
    7-15 minutes; the file name hashes the model's path, its max_seq_length (bench/
    recipe_sweep.py truncates to the trainer's) and the exact titles encoded, so a different
    catalog, model or truncation never reads a stale matrix.
    """
    digest = hashlib.blake2b(f"{model_path}\0{model.max_seq_length}".encode(), digest_size=8)
    for i in ids:
        digest.update(titles[i].encode())
        digest.update(b"\0")
    return RESULTS / f"base_catalog_{len(ids)}_{digest.hexdigest()}.npy"


class Index:
    """A model's embeddings of the catalog, for ranking and scoring."""

    def __init__(
        self,
        model: Any,
        ids: list[str],
        titles: dict[str, str],
        label: str,
        cache: Path | None = None,
    ) -> None:
        self.model = model
        self.ids = ids
        started = time.perf_counter()
        if cache is not None and cache.exists():
            self.matrix = np.load(cache)
            how = f"loaded from {cache.name}"
        else:
            self.matrix = model.encode(
                [titles[i] for i in ids],
                batch_size=256,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            how = "encoded"
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.save(cache, self.matrix)
        self.seconds = time.perf_counter() - started
        print(f"  {label}: {len(ids):,} titles {how} in {self.seconds:.0f} s")

    def queries(self, queries: list[str]) -> np.ndarray:
        return self.model.encode(
            queries, batch_size=256, normalize_embeddings=True, show_progress_bar=False
        )

    def top(self, queries: list[str], k: int) -> list[list[str]]:
        scores = self.queries(queries) @ self.matrix.T
        top = np.argpartition(-scores, kth=k, axis=1)[:, :k]
        out = []
        for row, cand in zip(scores, top, strict=True):
            order = cand[np.argsort(-row[cand])]
            out.append([self.ids[j] for j in order])
        return out


def score(index: Index, queries: list[str], data: Dataset) -> dict[str, float]:
    totals = dict.fromkeys((m.name for m in METRICS), 0.0)
    if not queries:
        return totals
    for query, retrieved in zip(queries, index.top(queries, 100), strict=True):
        grades = data.grades[query]
        relevant = {i for i, g in grades.items() if g >= RELEVANT}
        gains = {i: g - 1.0 for i, g in grades.items()}
        for m in METRICS:
            if m.name.startswith("ndcg"):
                totals[m.name] += m(retrieved, set(gains), gains)
            else:
                totals[m.name] += m(retrieved, relevant, None)
    return {k: v / len(queries) for k, v in totals.items()}


async def _pipeline(
    settings: Settings, sim: ClickSimulator, sessions: list[list[Any]]
) -> tuple[Any, dict[str, Any]]:
    """Publish, batch, release, train: returns the model_ready event (or None) and timings."""
    import redis.asyncio as aioredis

    from consumer.service import ClickstreamConsumer
    from consumer.tasks import TaskStore
    from producer.subscriber import subscribe_model_ready
    from trainer.worker import TrainerWorker

    times: dict[str, Any] = {}
    consumer = ClickstreamConsumer(settings, serve_health=False)
    await consumer.start()
    consuming = asyncio.create_task(consumer.run())
    redis = aioredis.from_url(settings.redis_url)
    keys = settings.redis_key_prefix
    try:
        started = time.perf_counter()
        async with ClickstreamPublisher(settings) as publisher:
            for item in sim.items():
                await publisher.send(item)
            for events in sessions:
                for event in events:
                    await publisher.send(event)
            await publisher.flush()
            while True:
                bid = await redis.get(f"{keys}batch:open")
                count = (
                    int(await redis.hget(f"{keys}batch:{bid.decode()}", "sessions") or 0)
                    if bid
                    else 0
                )
                if count >= len(sessions):
                    break
                await asyncio.sleep(0.2)
            times["ingest_s"] = round(time.perf_counter() - started, 1)
            await publisher.release(idempotency_key=f"bench-{keys}")
        tasks = TaskStore(redis, keys)
        while not await tasks.recent():  # noqa: ASYNC110 - polling Redis, not an event
            await asyncio.sleep(0.2)
    finally:
        consumer.request_stop()
        await consuming
    started = time.perf_counter()
    worker = TrainerWorker(settings, serve_health=False, max_tasks=1)
    await worker.start()
    await worker.run()
    times["release_to_done_s"] = round(time.perf_counter() - started, 1)
    [record] = await tasks.recent()
    times["task"] = {"status": record.status.value, "detail": record.detail}
    await redis.aclose()
    event = None
    if record.detail.startswith("champion"):
        async with asyncio.timeout(60), subscribe_model_ready(settings, group_id=None) as ready:
            event = await anext(ready)
    return event, times


def _reference(base: str, pairs: list[tuple[str, str]], out: Path) -> Any:
    """sentence-transformers' own path: (query, clicked title) pairs, MNRL, library defaults."""
    from datasets import Dataset as HFDataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    model = SentenceTransformer(base, device="cpu")
    train = HFDataset.from_dict(
        {"anchor": [q for q, _ in pairs], "positive": [t for _, t in pairs]}
    )
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out), report_to="none", save_strategy="no", seed=0
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train, loss=MultipleNegativesRankingLoss(model)
    )
    trainer.train()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-queries", type=int, default=300)
    parser.add_argument("--sessions-per-query", type=int, default=5)
    parser.add_argument("--test-queries", type=int, default=600)
    parser.add_argument(
        "--catalog-size",
        type=int,
        default=0,
        help="rank a subset of this many products (all judged ones of the chosen queries "
        "plus a deterministic sample); 0 = the whole catalog",
    )
    parser.add_argument("--max-evals", type=int, default=4)
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per trial (default: CLICKTUNE_EPOCHS)"
    )
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument(
        "--min-improvement",
        type=float,
        default=None,
        help="override CLICKTUNE_MIN_IMPROVEMENT (e.g. -1 to see the best trial's quality "
        "even when the trainer would not ship it)",
    )
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"bench/quality.py: {DATA} not found (see ../shared/data/homedepot/README.md)")

    offline()
    # The trainer's one line per trial (parameters, rerank_ips_dcg@10, seconds).
    logging.basicConfig(format="  %(name)s: %(message)s")
    logging.getLogger("trainer.task_runner").setLevel(logging.INFO)
    from sentence_transformers import SentenceTransformer

    t_all = time.perf_counter()
    data = load(DATA)
    train_q, test_q = split(data, args.train_queries, args.test_queries)
    ids = sorted(data.titles)
    if args.catalog_size:
        needed = {i for q in train_q + test_q for i in data.grades[q]}
        rest = sorted((i for i in ids if i not in needed), key=lambda i: _bucket(i))
        ids = sorted(needed | set(rest[: max(0, args.catalog_size - len(needed))]))
    print(
        f"homedepot: {len(data.titles):,} products, {len(data.grades):,} queries; "
        f"train {len(train_q)} queries x {args.sessions_per_query} sessions, "
        f"test {len(test_q)} queries, catalog {len(ids):,} "
        f"({'whole' if len(ids) == len(data.titles) else 'subset'})"
    )
    base_path = base_model_path(Settings.load().base_model)
    base = SentenceTransformer(base_path, device="cpu")
    base_index = Index(
        base, ids, data.titles, "base model", cache=base_cache(base_path, base, ids, data.titles)
    )

    # The base model is the search engine the simulated users see.
    shown = dict(zip(train_q, base_index.top(train_q, 20), strict=True))
    judgments = {q: {i: click_grade(g) for i, g in data.grades[q].items()} for q in train_q}
    catalog = {i: data.titles[i] for q in train_q for i in shown[q]}
    sim = ClickSimulator(catalog, judgments, rank=lambda q: shown[q], seed=args.seed)
    sessions = [
        sim.session(n, q)
        for n, q in enumerate(q for q in train_q for _ in range(args.sessions_per_query))
    ]
    clicks = sum(isinstance(e, ClickEvent) for s in sessions for e in s)
    print(f"simulated {len(sessions):,} sessions, {clicks:,} clicks")

    run = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        settings = Settings.load(
            kafka_bootstrap_servers=broker.bootstrap_servers,
            kafka_enable_idempotence=False,
            topic_prefix=f"q{run}.",
            redis_key_prefix=f"bench-quality-{run}:",
            consumer_group=f"q{run}-consumer",
            trainer_group=f"q{run}-trainers",
            metrics_port=0,
            trainer_metrics_port=0,
            mlflow_tracking_uri=f"sqlite:///{tmp}/mlflow.db",
            work_dir=Path(tmp) / "work",
            max_evals=args.max_evals,
            **({} if args.epochs is None else {"epochs": args.epochs}),
            model_name_prefix=f"bench-{run}",
            **({} if args.min_improvement is None else {"min_improvement": args.min_improvement}),
        )
        os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
        args.epochs = settings.epochs
        print(f"pipeline: {args.max_evals} trials x {args.epochs} epoch(s), CPU …")
        event, times = asyncio.run(_pipeline(settings, sim, sessions))
        print(f"  task: {times['task']}")
        rows: dict[str, dict[str, float]] = {}
        general = _general_slice(base_index, train_q, test_q)
        rows["base"] = score(base_index, test_q, data)
        rows["base (general slice)"] = score(base_index, general, data)
        if event is not None:
            import mlflow.sentence_transformers

            tuned = mlflow.sentence_transformers.load_model(event.model_uri)
            # Which trial shipped: the default recipe (trial 1) or a TPE draw.
            run = mlflow.MlflowClient().get_run(event.mlflow_run_id)
            times["shipped_params"] = run.data.params
            print(f"  shipped: run {run.info.run_name}, {run.data.params}")
            tuned_index = Index(tuned, ids, data.titles, "clicktune")
            rows["clicktune"] = score(tuned_index, test_q, data)
            rows["clicktune (general slice)"] = score(tuned_index, general, data)
        else:
            # No model_ready: the trainer found no improvement and kept serving the base.
            rows["clicktune"] = rows["base"]
            rows["clicktune (general slice)"] = rows["base (general slice)"]
        if not args.skip_reference:
            pairs = [
                (s[0].query, data.titles[c.item_id])
                for s in sessions
                if isinstance(s[0], SearchEvent)
                for c in s
                if isinstance(c, ClickEvent)
            ]
            started = time.perf_counter()
            ref = _reference(str(base_path), pairs, Path(tmp) / "ref")
            times["reference_train_s"] = round(time.perf_counter() - started, 1)
            ref_index = Index(ref, ids, data.titles, "reference")
            rows["reference (ST + MNRL)"] = score(ref_index, test_q, data)
            rows["reference (general slice)"] = score(ref_index, general, data)
    _report(rows, args, times, event, len(ids), len(data.titles), len(sessions), clicks)
    print(f"total {time.perf_counter() - t_all:.0f} s")


def _general_slice(index: Index, train_q: list[str], test_q: list[str]) -> list[str]:
    similarity = (index.queries(test_q) @ index.queries(train_q).T).max(axis=1)
    cut = float(np.median(similarity))
    return [q for q, s in zip(test_q, similarity, strict=True) if s < cut]


def _report(
    rows: dict[str, dict[str, float]],
    args: argparse.Namespace,
    times: dict[str, Any],
    event: Any,
    catalog: int,
    whole: int,
    sessions: int,
    clicks: int,
) -> None:
    names = [m.name for m in METRICS]
    print("\nmodel | " + " | ".join(names))
    for label, values in rows.items():
        print(f"{label} | " + " | ".join(f"{values[n]:.4f}" for n in names))
    base, ours = rows["base"]["ndcg@10"], rows["clicktune"]["ndcg@10"]
    gen_base = rows["base (general slice)"]["ndcg@10"]
    gen_ours = rows["clicktune (general slice)"]["ndcg@10"]
    verdict = {
        "ndcg@10_gain_abs": round(ours - base, 4),
        "ndcg@10_gain_rel_pct": round(100 * (ours - base) / base, 2) if base else 0.0,
        "beats_base": ours > base,
        "general_slice_drop": round(gen_base - gen_ours, 4),
        "general_slice_within_tolerance": gen_base - gen_ours <= args.tolerance,
    }
    if "reference (ST + MNRL)" in rows:
        verdict["beats_reference"] = ours > rows["reference (ST + MNRL)"]["ndcg@10"]
    print(json.dumps(verdict))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "catalog": {"ranked": catalog, "whole": whole},
                "sessions": sessions,
                "clicks": clicks,
                "model_ready": None
                if event is None
                else {"uri": event.model_uri, "metrics": event.metrics.model_dump()},
                "times": times,
                "rows": rows,
                "verdict": verdict,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
