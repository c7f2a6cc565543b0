"""EmbeddingsFineTuner: the LightningModule of one fine-tuning run.

Per step, the DataLoader's collate function turns pairs into a :class:`TokenBatch`: each
distinct query and item of the batch once, as token tensors sliced from the task's
:class:`~trainer.token_cache.TokenCache` (tokenised once per task), plus integer indexes that
say which rows make each pair. Validation encodes the held-out queries and the item pool
once per epoch, and both the validation loss and the metrics use those embeddings.
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import lightning
import torch
from sentence_transformers import SentenceTransformer
from torch import Tensor
from torch.utils.data import DataLoader

from trainer.confidence import ConfidenceCalculator, ExaminationConfidence
from trainer.evaluation import MAIN_METRIC, POOL, evaluate
from trainer.losses import LOSSES, InBatchContrastiveLoss, MarginRankingLoss, PairBatch
from trainer.losses.base import RankingLoss
from trainer.metrics import MetricCalculator
from trainer.params import FineTuningParams
from trainer.ranking_data import Pair, Session
from trainer.token_cache import Features, TokenCache, _preprocess

log = logging.getLogger(__name__)
QueryRetriever = Callable[[str], str]  # query as logged -> text to embed
#: Texts per forward pass when a whole pool is encoded (evaluation).
ENCODE_CHUNK = 256


def identity_query(query: str) -> str:
    return query


@dataclass
class ItemsSets:
    """Train pairs, held-out pairs and sessions, and the texts of every item they name."""

    train: list[Pair]
    test: list[Pair]
    test_sessions: list[Session]
    items: dict[str, str]


@dataclass
class TokenBatch:
    """One training step's inputs: distinct queries and items as token tensors; per pair,
    the row of its query and of its positive and negative item (-1 where absent).
    ``positive_ids``/``negative_ids`` number the batch's distinct item ids, so a loss can
    tell that two pairs share an item."""

    queries: Features
    items: Features | None
    query_index: Tensor
    positive_ids: Tensor
    negative_ids: Tensor
    weight: Tensor

    def __len__(self) -> int:
        return len(self.query_index)

    def _map(self, fn: Callable[[Tensor], Tensor]) -> "TokenBatch":
        def convert(value: Any) -> Any:
            if isinstance(value, Tensor):
                return fn(value)
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            return value

        return TokenBatch(**{f.name: convert(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device | str) -> "TokenBatch":
        # Pinned tensors copy to the GPU asynchronously, overlapping the previous step.
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> "TokenBatch":
        """Called by the DataLoader (``pin_memory=True`` on CUDA)."""
        return self._map(lambda t: t.pin_memory())


class Tokens:
    """Token tensors of texts for one model: from the task's cache when it was built with this
    model's tokenizer and holds the texts, else tokenised now."""

    def __init__(self, model: SentenceTransformer, cache: TokenCache | None) -> None:
        self.model = model
        self.cache = cache if cache is not None and cache.matches(model) else None

    def __call__(self, texts: Sequence[str]) -> Features:
        cache = self.cache
        if cache is not None and all(t in cache for t in texts):
            return cache.features(cache.rows(texts))
        return _preprocess(self.model, texts)

    def by_length(self, texts: Sequence[str]) -> list[int]:
        if self.cache is not None and all(t in self.cache for t in texts):
            return self.cache.by_length(texts)
        return sorted(range(len(texts)), key=lambda i: len(texts[i]))


def make_token_batch(
    pairs: Sequence[Pair],
    items: dict[str, str],
    query_retriever: QueryRetriever,
    query_tokens: Tokens,
    item_tokens: Tokens,
) -> TokenBatch:
    """The :class:`TokenBatch` of ``pairs``: each distinct text is encoded once per step,
    however many pairs name it."""
    item_ids = sorted({i for p in pairs for i in (p.positive, p.negative) if i})
    index = {item: n for n, item in enumerate(item_ids)}
    queries = sorted({p.query for p in pairs})
    q_index = {q: n for n, q in enumerate(queries)}
    return TokenBatch(
        queries=query_tokens([query_retriever(q) for q in queries]),
        items=item_tokens([items[i] for i in item_ids]) if item_ids else None,
        query_index=torch.tensor([q_index[p.query] for p in pairs]),
        positive_ids=torch.tensor([index[p.positive] if p.positive else -1 for p in pairs]),
        negative_ids=torch.tensor([index[p.negative] if p.negative else -1 for p in pairs]),
        weight=torch.tensor([p.weight for p in pairs], dtype=torch.float32),
    )


def pair_batch(
    query_emb: Tensor,
    item_emb: Tensor | None,
    query_index: Tensor,
    positive_ids: Tensor,
    negative_ids: Tensor,
    weight: Tensor,
    query_ids: Tensor | None = None,
) -> PairBatch:
    """Embeddings per pair from the embeddings of the distinct texts; absent items are
    zeros (index -1 picks the zero row appended at the end). Rows name their query by
    ``query_ids`` (default: ``query_index``, the row of the distinct query)."""
    zero = query_emb.new_zeros(1, query_emb.shape[1])
    table = zero if item_emb is None else torch.cat([item_emb.to(query_emb.dtype), zero])
    return PairBatch(
        query=query_emb[query_index],
        positive=table[positive_ids],
        negative=table[negative_ids],
        weight=weight.to(device=query_emb.device, dtype=query_emb.dtype),
        positive_ids=positive_ids,
        negative_ids=negative_ids,
        query_ids=query_ids if query_ids is not None else query_index,
    )


@torch.no_grad()
def encode_texts(
    model: SentenceTransformer, texts: Sequence[str], tokens: Tokens | None = None
) -> Tensor:
    """L2-normalised float32 embeddings of ``texts`` (in their order), in chunks of texts of
    similar length so that little of each forward pass is padding."""
    tokens = tokens or Tokens(model, None)
    if not texts:
        return torch.zeros(0, 1)
    order = tokens.by_length(texts)
    chunks = []
    for start in range(0, len(order), ENCODE_CHUNK):
        chunk = [texts[i] for i in order[start : start + ENCODE_CHUNK]]
        features = _to_device(tokens(chunk), model.device)
        chunks.append(model(features)["sentence_embedding"].float())
    by_length = torch.cat(chunks)
    out = torch.empty_like(by_length)
    out[torch.tensor(order, device=out.device)] = by_length
    return torch.nn.functional.normalize(out, dim=-1)


def _to_device(features: Features, device: torch.device) -> Features:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
        for k, v in features.items()
    }


def adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel where the device has one: one kernel for all parameters
    instead of a loop over them (all-MiniLM-L6-v2 on this project's 2-core CPU: 0.02 s a
    step instead of 0.12 s; sentence-transformers' trainer uses it by default too)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError, TypeError):  # a device without the fused kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def freeze_lower_layers(model: SentenceTransformer, layers: int) -> int:
    """Freeze the embeddings and the first ``layers`` transformer blocks; return how many
    parameters were frozen."""
    if layers <= 0:
        return 0
    backbone = model[0].auto_model
    modules = [backbone.embeddings, *backbone.encoder.layer[:layers]]
    frozen = 0
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad = False
            frozen += parameter.numel()
    return frozen


class EmbeddingsFineTuner(lightning.LightningModule):
    def __init__(
        self,
        model: SentenceTransformer | tuple[SentenceTransformer, SentenceTransformer],
        items_sets: ItemsSets,
        query_retriever: QueryRetriever,
        loss_func: RankingLoss,
        fine_tuning_params: FineTuningParams,
        tracker: Any = None,
        metric_calculators: Sequence[MetricCalculator] | None = None,
        ranker: Callable[[Tensor, Tensor], Tensor] | None = None,
        is_similarity: bool = True,
        confidence_calculator: ConfidenceCalculator | None = None,
        step_size: int = 500,
        gamma: float = 0.9,
        batch_size: int = 32,
        token_cache: TokenCache | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        if isinstance(model, tuple | list):
            self.query_model, self.items_model = model
        else:
            self.query_model = self.items_model = model
        self.items_sets = items_sets
        self.query_retriever = query_retriever
        self.loss_func = loss_func
        self.fine_tuning_params = fine_tuning_params
        self.tracker = tracker
        self.metric_calculators = metric_calculators
        self.ranker = ranker or (lambda a, b: a @ b.T)
        self.is_similarity = is_similarity
        self.confidence_calculator = confidence_calculator or ExaminationConfidence()
        self.step_size = step_size
        self.gamma = gamma
        self.batch_size = batch_size
        self.query_tokens = Tokens(self.query_model, token_cache)
        self.item_tokens = Tokens(self.items_model, token_cache)
        self._val_losses: list[float] = []
        self._eval: _EvalEmbeddings | None = None
        self.history: list[dict[str, float]] = []

    @property
    def separate_models(self) -> bool:
        return self.query_model is not self.items_model

    @classmethod
    def create(
        cls,
        model: SentenceTransformer,
        settings: Any,
        items_sets: ItemsSets,
        query_retriever: QueryRetriever,
        fine_tuning_params: FineTuningParams,
        tracker: Any = None,
        token_cache: TokenCache | None = None,
    ) -> "EmbeddingsFineTuner":
        p = fine_tuning_params
        loss: RankingLoss
        if LOSSES[p.loss] is MarginRankingLoss:
            loss = MarginRankingLoss(margin=p.margin)
        else:
            loss = InBatchContrastiveLoss()
        freeze_lower_layers(model, p.frozen_layers)
        return cls(
            model,
            items_sets,
            query_retriever,
            loss,
            p,
            tracker,
            step_size=p.step_size,
            gamma=p.gamma,
            batch_size=p.batch_size or settings.train_batch_size,
            token_cache=token_cache,
        )

    @staticmethod
    def preprocess_inputs(sessions: Sequence[Session]) -> list[Session]:
        """Sessions with every shown result ranked: a missing or None rank becomes the list
        position (the order the features extractor saw)."""
        out = []
        for s in sessions:
            ranked = tuple(
                (item, rank if rank else pos) for pos, (item, rank) in enumerate(s.shown, 1)
            )
            out.append(Session(s.session_id, s.query, ranked, s.clicked, s.irrelevant))
        return out

    # --- embedding ---------------------------------------------------------------------

    def collate(self, pairs: list[Pair]) -> TokenBatch:
        return make_token_batch(
            pairs,
            self.items_sets.items,
            self.query_retriever,
            self.query_tokens,
            self.item_tokens,
        )

    def _embed_batch(self, batch: TokenBatch) -> PairBatch:
        b = batch.to(self.device)  # a no-op when Lightning has moved it already
        q_emb = self.query_model(b.queries)["sentence_embedding"]
        i_emb = None if b.items is None else self.items_model(b.items)["sentence_embedding"]
        return pair_batch(q_emb, i_emb, b.query_index, b.positive_ids, b.negative_ids, b.weight)

    def _pair_batch(self, pairs: Sequence[Pair]) -> PairBatch:
        return self._embed_batch(self.collate(list(pairs)))

    @torch.no_grad()
    def encode_items(self, texts: Sequence[str]) -> Tensor:
        return encode_texts(self.items_model, texts, self.item_tokens)

    @torch.no_grad()
    def encode_queries(self, texts: Sequence[str]) -> Tensor:
        return encode_texts(
            self.query_model, [self.query_retriever(t) for t in texts], self.query_tokens
        )

    # --- Lightning ---------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader[Pair]:
        # No worker processes: with the token cache a batch is a few index lookups (tens of
        # microseconds), less than what shipping it from a worker would cost.
        return DataLoader(
            self.items_sets.train,
            batch_size=self.batch_size,
            shuffle=True,
            collate_fn=self.collate,
            pin_memory=self.device.type == "cuda",
        )

    def val_dataloader(self) -> DataLoader[Pair]:
        # Pairs as they are: their embeddings come from the epoch's evaluation pass.
        return DataLoader(
            self.items_sets.test, batch_size=self.batch_size, shuffle=False, collate_fn=list
        )

    def on_train_epoch_start(self) -> None:
        # Models load in eval mode; fine-tune as sentence-transformers' own trainer does,
        # with dropout on (Lightning puts them back in eval mode for validation).
        self.query_model.train()
        self.items_model.train()

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        # Validation batches are Pair records: their embeddings come from the epoch's
        # evaluation pass, already on the device.
        return batch.to(device) if isinstance(batch, TokenBatch) else batch

    def configure_optimizers(self) -> Any:
        if (
            not isinstance(self.step_size, int)
            or isinstance(self.step_size, bool)
            or self.step_size <= 0
        ):
            raise ValueError(f"step_size must be a positive int, got {self.step_size!r}")
        if not isinstance(self.gamma, float) or not 0.0 < self.gamma < 1.0:
            raise ValueError(f"gamma must be a float in (0, 1), got {self.gamma!r}")
        models = (
            [self.query_model, self.items_model] if self.separate_models else [self.query_model]
        )
        out = []
        for model in models:
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = adamw(
                params,
                lr=self.fine_tuning_params.learning_rate,
                weight_decay=self.fine_tuning_params.weight_decay,
            )
            scheduler = self._scheduler(optimizer)
            out.append(
                {
                    "optimizer": optimizer,
                    "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
                }
            )
        return out if len(out) > 1 else out[0]

    def _scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        p = self.fine_tuning_params
        if p.schedule == "linear":
            # transformers' own schedule, the one SentenceTransformerTrainer uses by default.
            from transformers import get_linear_schedule_with_warmup

            total = max(1, int(self.trainer.estimated_stepping_batches))
            return get_linear_schedule_with_warmup(optimizer, int(p.warmup_ratio * total), total)
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=self.step_size, gamma=self.gamma
        )

    def training_step(self, batch: TokenBatch, batch_idx: int) -> Tensor:
        optimizers = self.optimizers()
        schedulers = self.lr_schedulers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss = self.loss_func(self._embed_batch(batch))
        self.manual_backward(loss)
        clip = self.fine_tuning_params.max_grad_norm
        for optimizer in optimizers:
            if clip > 0:
                self.clip_gradients(
                    optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm"
                )
            optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
        self.log("train_loss", loss.detach(), prog_bar=True, batch_size=len(batch))
        return loss.detach()

    def on_validation_epoch_start(self) -> None:
        self._eval = self._encode_eval_set()

    def _encode_eval_set(self) -> "_EvalEmbeddings":
        """Embeddings of every item text and held-out query, once per evaluation: the
        validation loss and the metrics both read them (one forward pass per text)."""
        sets = self.items_sets
        item_texts = list(dict.fromkeys(sets.items.values()))
        queries = list(
            dict.fromkeys([s.query for s in sets.test_sessions] + [p.query for p in sets.test])
        )
        return _EvalEmbeddings(
            {t: n for n, t in enumerate(item_texts)},
            self.encode_items(item_texts),
            {q: n for n, q in enumerate(queries)},
            self.encode_queries(queries),
        )

    def validation_step(self, pairs: list[Pair], batch_idx: int) -> Tensor:
        emb = self._eval if self._eval is not None else self._encode_eval_set()
        items = self.items_sets.items
        item_ids = sorted({i for p in pairs for i in (p.positive, p.negative) if i})
        index = {item: n for n, item in enumerate(item_ids)}

        def ids(which: str) -> Tensor:
            return torch.tensor(
                [index[getattr(p, which)] if getattr(p, which) else -1 for p in pairs],
                device=emb.items.device,
            )

        item_rows = [emb.item_row[items[i]] for i in item_ids]
        query_rows = [emb.query_row[p.query] for p in pairs]
        batch = pair_batch(
            emb.queries[query_rows],
            emb.items[item_rows] if item_rows else None,
            torch.arange(len(pairs), device=emb.items.device),
            ids("positive"),
            ids("negative"),
            torch.tensor([p.weight for p in pairs]),
            query_ids=torch.tensor(query_rows, device=emb.items.device),
        )
        loss = self.loss_func(batch).detach()
        self._val_losses.append(float(loss))
        return loss

    def evaluate(self) -> dict[str, float]:
        sets = self.items_sets
        emb = self._eval
        encode_items: Callable[[Sequence[str]], Tensor] = self.encode_items
        encode_queries: Callable[[Sequence[str]], Tensor] = self.encode_queries
        if emb is not None:  # inside validation: this epoch's embeddings, not a second pass

            def encode_items(texts: Sequence[str]) -> Tensor:
                return emb.items[[emb.item_row[t] for t in texts]]

            def encode_queries(texts: Sequence[str]) -> Tensor:
                return emb.queries[[emb.query_row[t] for t in texts]]

        return evaluate(
            encode_items,
            self.preprocess_inputs(sets.test_sessions),
            sets.items,
            encode_queries=encode_queries,
            pool_metrics=self.metric_calculators or POOL,
            ranker=self.ranker,
            is_similarity=self.is_similarity,
        )

    def on_validation_epoch_end(self) -> float:
        mean_loss = sum(self._val_losses) / len(self._val_losses) if self._val_losses else 0.0
        metrics = {"val_loss": mean_loss, **self.evaluate()}
        self._eval = None  # the model changes in the next epoch
        for name, value in metrics.items():
            self.log(name, value, batch_size=1)
        self.history.append(metrics)
        log.info(
            "epoch %d: %s %.4f, val_loss %.4f",
            self.current_epoch,
            MAIN_METRIC,
            metrics.get(MAIN_METRIC, float("nan")),
            mean_loss,
        )
        if self.tracker is not None:
            self.tracker.log_epoch(metrics, epoch=self.current_epoch)
        self._val_losses = []
        return mean_loss

    @property
    def quality(self) -> float:
        return self.history[-1][MAIN_METRIC] if self.history else float("nan")


@dataclass
class _EvalEmbeddings:
    """One evaluation's embeddings: item texts and held-out queries (as logged), by row."""

    item_row: dict[str, int]
    items: Tensor
    query_row: dict[str, int]
    queries: Tensor
