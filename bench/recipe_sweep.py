"""Which fine-tuning recipe learns from clicks? A sweep on real relevance data, no pipeline.

    python bench/recipe_sweep.py --catalog-size 15000 --reference \\
        --configs '[{"learning_rate": 2e-5, "batch_size": 16, "warmup_ratio": 0.1}]'

The same data and simulated clicks as ``bench/quality.py`` (Home Depot grades, the base model
as the search engine, the demo's click model), turned straight into the trainer's ranking
data (split by query as a task would be), then each ``FineTuningParams`` of ``--configs`` is
trained by clicktune's own ``EmbeddingsFineTuner`` and scored on the held-out test queries
over the catalog with the true grades. For every config it also prints the trainer's own
click estimates on the held-out sessions (the gate's ``rerank_ips_dcg@10`` and the
per-session ``rerank_ndcg@10``), so one can see whether the ship gate agrees with the
grades. ``--reference`` adds SentenceTransformerTrainer + MNRL on all the clicks (the
library path of bench/quality.py). It is how the default recipe of ``trainer/params.py`` was
chosen (docs/benchmarks.md); ``bench/quality.py`` is the end-to-end check. Each
config's row is appended to bench/results/recipe_sweep.jsonl.

A config's keys are FineTuningParams fields, plus ``epochs`` (default 2) and ``full`` (train
on the held-out sessions too: how much the trainer's held-out split costs).
"""

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality import (  # noqa: E402  (bench/, the script's own folder)
    DATA,
    Index,
    _bucket,
    _general_slice,
    _reference,
    base_cache,
    click_grade,
    load,
    score,
    split,
)

from producer.settings import Settings  # noqa: E402
from producer.simulator import ClickSimulator  # noqa: E402
from schemas.clickstream import ClickEvent, IrrelevantEvent  # noqa: E402
from trainer.model_source import base_model_path, offline  # noqa: E402
from trainer.ranking_data import RankingData, Session, split_by_query  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="[{}]", help="JSON list of parameter sets")
    parser.add_argument("--catalog-size", type=int, default=15_000, help="0 = whole catalog")
    parser.add_argument("--train-queries", type=int, default=300)
    parser.add_argument("--sessions-per-query", type=int, default=5)
    parser.add_argument("--test-queries", type=int, default=600)
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--split-id",
        default="b000001",
        help="the batch id the trainer's by-query split hashes (a task's batch id; "
        "bench/quality.py's one batch is b000001)",
    )
    args = parser.parse_args()
    try:
        configs = json.loads(args.configs)
        assert isinstance(configs, list) and all(isinstance(c, dict) for c in configs)
    except (ValueError, AssertionError):
        parser.error("--configs: a JSON list of objects")
    if not DATA.exists():
        sys.exit(
            f"bench/recipe_sweep.py: {DATA} not found (see ../shared/data/homedepot/README.md)"
        )

    offline()
    import lightning
    import torch
    from sentence_transformers import SentenceTransformer

    from trainer.evaluation import MAIN_METRIC, evaluate
    from trainer.fine_tuner import EmbeddingsFineTuner, Tokens, encode_texts, identity_query
    from trainer.params import FineTuningParams
    from trainer.search import items_sets, lightning_device
    from trainer.token_cache import TokenCache

    data = load(DATA)
    train_q, test_q = split(data, args.train_queries, args.test_queries)
    ids = sorted(data.titles)
    if args.catalog_size:
        needed = {i for q in train_q + test_q for i in data.grades[q]}
        rest = sorted((i for i in ids if i not in needed), key=_bucket)
        ids = sorted(needed | set(rest[: max(0, args.catalog_size - len(needed))]))
    path = str(base_model_path("all-MiniLM-L6-v2"))
    base = SentenceTransformer(path, device="cpu")
    base.max_seq_length = Settings.load().max_seq_length
    RESULTS.mkdir(parents=True, exist_ok=True)
    base_index = Index(
        base, ids, data.titles, "base model", cache=base_cache(path, base, ids, data.titles)
    )

    shown = dict(zip(train_q, base_index.top(train_q, 20), strict=True))
    judgments = {q: {i: click_grade(g) for i, g in data.grades[q].items()} for q in train_q}
    catalog = {i: data.titles[i] for q in train_q for i in shown[q]}
    sim = ClickSimulator(catalog, judgments, rank=lambda q: shown[q], seed=args.seed)
    simulated = [
        sim.session(n, q)
        for n, q in enumerate(q for q in train_q for _ in range(args.sessions_per_query))
    ]
    sessions = []
    for events in simulated:
        search = events[0]
        clicked = frozenset(e.item_id for e in events if isinstance(e, ClickEvent))
        irrelevant = any(isinstance(e, IrrelevantEvent) for e in events)
        if clicked or irrelevant:
            pairs = tuple(search.ranked_pairs())
            sessions.append(Session(search.session_id, search.query, pairs, clicked, irrelevant))
    train, held_out = split_by_query(args.split_id, sessions, Settings.load().test_fraction)
    general = _general_slice(base_index, train_q, test_q)
    print(
        f"catalog {len(ids):,}; {len(simulated):,} sessions, "
        f"{sum(len(s.clicked) for s in sessions):,} clicks; trainer split {len(train)} / "
        f"{len(held_out)} sessions"
    )
    cache = TokenCache(base, [*catalog.values(), *sorted({s.query for s in sessions})])

    def click_estimates(model: Any) -> dict[str, float]:
        tokens = Tokens(model, cache)
        held = EmbeddingsFineTuner.preprocess_inputs(held_out)
        got = evaluate(lambda t: encode_texts(model, list(t), tokens), held, catalog)
        return {f"click_{k}": round(got[k], 4) for k in (MAIN_METRIC, "rerank_ndcg@10")}

    def report(label: Any, model: Any, extra: dict[str, Any]) -> None:
        index = Index(model, ids, data.titles, "tuned")
        row = {
            "config": label,
            **extra,
            **{k: round(v, 4) for k, v in score(index, test_q, data).items()},
            "general_ndcg@10": round(score(index, general, data)["ndcg@10"], 4),
            "catalog": len(ids),
        }
        print(json.dumps(row), flush=True)
        with (RESULTS / "recipe_sweep.jsonl").open("a") as out:
            out.write(json.dumps(row) + "\n")

    report("base", base, click_estimates(base))
    for config in configs:
        config = dict(config)
        epochs, full = config.pop("epochs", 2), config.pop("full", False)
        params = FineTuningParams(**config)
        lightning.seed_everything(0, verbose=False)
        model = copy.deepcopy(base, {id(base.tokenizer): base.tokenizer})
        ranking = RankingData(args.split_id, train + (held_out if full else []), held_out, catalog)
        module = EmbeddingsFineTuner.create(
            model,
            Settings.load(epochs=epochs),
            items_sets(ranking, params),
            identity_query,
            params,
            token_cache=cache,
        )
        trainer = lightning.Trainer(
            max_epochs=epochs,
            **lightning_device("cpu"),
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            num_sanity_val_steps=0,
        )
        started = time.perf_counter()
        trainer.fit(module)
        model.eval()
        extra = {
            "train_s": round(time.perf_counter() - started),
            "rows": len(module.items_sets.train),
            **click_estimates(model),
        }
        report({**config, "epochs": epochs, "full": full}, model, extra)
        del trainer, module
        torch.set_grad_enabled(True)
    if args.reference:
        pairs = [
            (s[0].query, data.titles[c.item_id])
            for s in simulated
            for c in s
            if isinstance(c, ClickEvent)
        ]
        started = time.perf_counter()
        ref = _reference(path, pairs, RESULTS / "sweep-reference")
        # Its click estimate is not comparable: it trained on the held-out sessions too.
        report(
            "reference (ST + MNRL, all clicks)",
            ref,
            {"train_s": round(time.perf_counter() - started)},
        )


if __name__ == "__main__":
    main()
