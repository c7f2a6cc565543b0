"""A model scored on the demo catalog's hidden grades, not on clicks.

Clicks are biased toward what the old model showed first: per-session click metrics
(``rerank_mrr@10``) favour the ranking that was served, which is why the trainer chooses and
gates models on an inverse-propensity estimate. The demo's generated catalog
(``producer.sample_catalog``) knows the truth the simulated users click by, so the demo can
show what the estimate is for: each judged query ranks the **whole catalog** and

    NDCG@k = DCG@k / IDCG@k,   DCG@k = sum_{r=1..k} grade(r) / log2(r + 1)

with the hidden grades as gains (``trainer.metrics.NDCG``), averaged over the queries; the
queries the trainer held out of training are averaged on their own as well.
"""

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from producer.settings import Settings
from schemas.model_ready import ModelReadyEvent
from trainer.metrics import NDCG


@dataclass(frozen=True)
class GradedQuality:
    ndcg: float  # mean over every judged query
    ndcg_held_out: float  # mean over the queries the trainer never trained on (nan if none)
    queries: int
    held_out: int


def graded_ndcg(
    model: Any,
    catalog: Mapping[str, str],
    judgments: Mapping[str, Mapping[str, int]],
    held_out: Callable[[str], bool],
    k: int = 10,
) -> GradedQuality:
    """``model`` is anything with sentence-transformers' ``encode``."""
    ids = list(catalog)
    items = model.encode([catalog[i] for i in ids], normalize_embeddings=True, batch_size=128)
    queries = sorted(judgments)
    scores = model.encode(queries, normalize_embeddings=True) @ np.asarray(items).T
    metric = NDCG(k)
    per_query = {}
    for query, row in zip(queries, scores, strict=True):
        top = [ids[j] for j in np.argsort(-row, kind="stable")[:k]]
        grades = {i: float(g) for i, g in judgments[query].items() if g > 0}
        per_query[query] = metric(top, set(grades), grades)
    kept = [v for q, v in per_query.items() if held_out(q)]
    return GradedQuality(
        ndcg=float(np.mean(list(per_query.values()))) if per_query else float("nan"),
        ndcg_held_out=float(np.mean(kept)) if kept else float("nan"),
        queries=len(per_query),
        held_out=len(kept),
    )


def base_and_published(
    s: Settings, event: ModelReadyEvent, catalog: dict[str, str], judgments: dict[str, Any]
) -> tuple[GradedQuality, GradedQuality]:
    """The base model and the published one (fetched and checked as an indexer would) on
    the catalog's hidden grades."""
    from sentence_transformers import SentenceTransformer

    from producer.model_fetch import fetch_model, load_model
    from trainer.model_source import base_model_path, offline
    from trainer.ranking_data import is_held_out

    offline()

    def held_out(query: str) -> bool:
        return is_held_out(event.batch_id, query, s.test_fraction)

    base = SentenceTransformer(base_model_path(s.base_model), device="cpu")
    with tempfile.TemporaryDirectory(prefix="clicktune-grades-") as tmp:
        tuned = load_model(fetch_model(event, Path(tmp) / "model", settings=s), device="cpu")
    return (
        graded_ndcg(base, catalog, judgments, held_out),
        graded_ndcg(tuned, catalog, judgments, held_out),
    )
