"""Quality of a model on held-out sessions: re-ranking what was shown, and retrieval.

Two views, over test sessions that have clicks:
- ``rerank_*``: the session's shown results, ordered by cosine(query, item); every model is
  judged on the same logged candidates.
  ``rerank_ips_dcg@10`` drives the search and the ship/no-ship decision. It is the
  self-normalised inverse-propensity (SNIPS) estimate of the DCG discount at which the
  candidate places a relevant result (Joachims et al., "Unbiased Learning-to-Rank with Biased
  Feedback", 2017):

      IPS-DCG@k = sum_s sum_{i in C_s} w_i * d(pos_s(i)) / sum_s sum_{i in C_s} w_i,
      w_i = 1 / P(examined | logged rank of i),  d(p) = 1 / log2(1 + p) for p <= k, else 0

  where C_s are the clicks of session s and pos_s(i) is i's position in the candidate's
  re-ranking. Each click counts with its propensity weight *across* sessions. The per-session
  ``rerank_ndcg@10`` (also reported) divides by each session's own ideal DCG, which cancels
  the weight of a session's only click: most sessions have one click, mostly near the top
  (users look there), so that average rewards agreeing with the order that was served. On
  real graded data (bench/quality.py) it refused models that were better on the grades;
- ``rerank_ndcg@10``, ``rerank_mrr@10``, ``rerank_recall@10``: per-session means, with
  inverse-propensity gains;
- ``ndcg@10``, ``mrr@10``, ``recall@100`` (no prefix): the whole batch's item pool, ordered
  by cosine(query, item) — what an embedding model is used for, reported alongside. Clicks
  exist only on what the serving model showed, so this view favours the serving model
  (selection bias that propensities cannot undo): on real graded data (bench/quality.py)
  it rejected models that were better on the true grades.
Item embeddings are computed once per evaluation and shared by both views.
"""

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from trainer.confidence import ExaminationConfidence
from trainer.metrics import MRR, NDCG, MetricCalculator, Recall
from trainer.ranking_data import Session

Encode = Callable[[Sequence[str]], Tensor]  # texts -> (n, d) L2-normalised embeddings

MAIN_METRIC = "rerank_ips_dcg@10"
MAIN_DEPTH = 10
#: P(examined | rank), floored at 0.1 so one deep click cannot dominate (weights <= 10).
propensity = ExaminationConfidence(eta=0.8, floor=0.1)
RERANK: tuple[MetricCalculator, ...] = (NDCG(10), MRR(10), Recall(10))
POOL: tuple[MetricCalculator, ...] = (NDCG(10), MRR(10), Recall(100))


@torch.no_grad()
def evaluate(
    encode: Encode,
    sessions: Sequence[Session],
    items: dict[str, str],
    encode_queries: Encode | None = None,
    *,
    pool_metrics: Sequence[MetricCalculator] = POOL,
    ranker: Callable[[Tensor, Tensor], Tensor] | None = None,
    is_similarity: bool = True,
    debias: bool = True,
) -> dict[str, float]:
    """Mean metrics over ``sessions`` with clicks. ``encode_queries`` defaults to ``encode``;
    ``ranker`` scores queries against items (cosine of the normalised embeddings by
    default); with ``is_similarity=False`` it returns distances and lower ranks first."""
    judged = [s for s in sessions if s.clicked and not s.irrelevant]
    names = [MAIN_METRIC] + [f"rerank_{m.name}" for m in RERANK] + [m.name for m in pool_metrics]
    if not judged or not items:
        return dict.fromkeys(names, 0.0)
    pool_ids = sorted(items)
    index = {item: i for i, item in enumerate(pool_ids)}
    item_emb = encode([items[i] for i in pool_ids])
    query_emb = (encode_queries or encode)([s.query for s in judged])
    scores = ranker(query_emb, item_emb) if ranker else query_emb @ item_emb.T
    if not is_similarity:
        scores = -scores
    totals = dict.fromkeys(names, 0.0)
    ips_discounted = ips_weight = 0.0
    depth = max(m.k for m in pool_metrics)
    top = torch.topk(scores, k=min(depth, len(pool_ids)), dim=1).indices.tolist()
    for row, session in enumerate(judged):
        relevant = set(session.clicked)
        # Inverse propensity: a click where few users look says more than one at the top,
        # which corrects click-based NDCG's bias toward the model that served the results.
        gains = (
            {item: 1.0 / propensity(rank) for item, rank in session.shown if item in relevant}
            if debias
            else None
        )
        shown = [i for i, _ in session.shown if i in index]
        shown_scores = scores[row, [index[i] for i in shown]].tolist()
        reranked = [
            i for _, i in sorted(zip(shown_scores, shown, strict=True), key=lambda x: -x[0])
        ]
        retrieved = [pool_ids[j] for j in top[row]]
        logged = dict(session.shown)
        for pos, item in enumerate(reranked[:MAIN_DEPTH], 1):
            if item in relevant:
                ips_discounted += _weight(logged[item]) / math.log2(1 + pos)
        ips_weight += sum(_weight(logged[i]) for i in relevant if i in index and i in logged)
        for m in RERANK:
            totals[f"rerank_{m.name}"] += m(reranked, relevant, gains)
        for m in pool_metrics:
            totals[m.name] += m(retrieved, relevant, gains)
    out = {k: v / len(judged) for k, v in totals.items()}
    out[MAIN_METRIC] = ips_discounted / ips_weight if ips_weight else 0.0
    return out


def _weight(rank: int | None) -> float:
    return 1.0 / propensity(rank or 1)
