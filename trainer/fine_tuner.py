"""EmbeddingsFineTuner: the LightningModule of one fine-tuning run."""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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

log = logging.getLogger(__name__)
QueryRetriever = Callable[[str], str]  # query as logged -> text to embed


def identity_query(query: str) -> str:
    return query


@dataclass
class ItemsSets:
    """Train pairs, held-out pairs and sessions, and the texts of every item they name."""

    train: list[Pair]
    test: list[Pair]
    test_sessions: list[Session]
    items: dict[str, str]


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
        self._val_losses: list[float] = []
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
            batch_size=settings.train_batch_size,
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

    def _embed(self, model: SentenceTransformer, texts: Sequence[str]) -> Tensor:
        features = model.tokenize(list(texts))
        features = {
            k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in features.items()
        }
        return model(features)["sentence_embedding"]

    def _pair_batch(self, pairs: Sequence[Pair]) -> PairBatch:
        # Each distinct text is encoded once per step, however many pairs name it.
        item_ids = sorted({i for p in pairs for i in (p.positive, p.negative) if i})
        index = {item: n for n, item in enumerate(item_ids)}
        queries = sorted({p.query for p in pairs})
        q_index = {q: n for n, q in enumerate(queries)}
        q_emb = self._embed(self.query_model, [self.query_retriever(q) for q in queries])
        texts = self.items_sets.items
        i_emb = self._embed(self.items_model, [texts[i] for i in item_ids]) if item_ids else None
        dim = q_emb.shape[1]
        zero = q_emb.new_zeros(dim)

        def pick(item: str) -> Tensor:
            return i_emb[index[item]] if item and i_emb is not None else zero

        return PairBatch(
            query=q_emb[[q_index[p.query] for p in pairs]],
            positive=torch.stack([pick(p.positive) for p in pairs]),
            negative=torch.stack([pick(p.negative) for p in pairs]),
            weight=torch.tensor([p.weight for p in pairs], device=self.device, dtype=q_emb.dtype),
            positive_ids=torch.tensor(
                [index[p.positive] if p.positive else -1 for p in pairs], device=self.device
            ),
            negative_ids=torch.tensor(
                [index[p.negative] if p.negative else -1 for p in pairs], device=self.device
            ),
        )

    @torch.no_grad()
    def encode_items(self, texts: Sequence[str]) -> Tensor:
        return self._encode(self.items_model, texts)

    @torch.no_grad()
    def encode_queries(self, texts: Sequence[str]) -> Tensor:
        return self._encode(self.query_model, [self.query_retriever(t) for t in texts])

    def _encode(self, model: SentenceTransformer, texts: Sequence[str]) -> Tensor:
        chunks = [self._embed(model, texts[i : i + 256]) for i in range(0, len(texts), 256)]
        out = torch.cat(chunks) if chunks else torch.zeros(0, 1)
        return torch.nn.functional.normalize(out.float(), dim=-1)

    # --- Lightning ---------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader[Pair]:
        return DataLoader(
            self.items_sets.train,
            batch_size=self.batch_size,
            shuffle=True,
            collate_fn=list,
            pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self) -> DataLoader[Pair]:
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
        # Batches are Pair records (texts); tensors are made on the device in _pair_batch.
        return batch

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
            optimizer = torch.optim.AdamW(
                params,
                lr=self.fine_tuning_params.learning_rate,
                weight_decay=self.fine_tuning_params.weight_decay,
            )
            scheduler = torch.optim.lr_scheduler.StepLR(
                optimizer, step_size=self.step_size, gamma=self.gamma
            )
            out.append(
                {
                    "optimizer": optimizer,
                    "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
                }
            )
        return out if len(out) > 1 else out[0]

    def training_step(self, pairs: list[Pair], batch_idx: int) -> Tensor:
        optimizers = self.optimizers()
        schedulers = self.lr_schedulers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss = self.loss_func(self._pair_batch(pairs))
        self.manual_backward(loss)
        for optimizer in optimizers:
            optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
        self.log("train_loss", loss.detach(), prog_bar=True, batch_size=len(pairs))
        return loss.detach()

    def validation_step(self, pairs: list[Pair], batch_idx: int) -> Tensor:
        loss = self.loss_func(self._pair_batch(pairs)).detach()
        self._val_losses.append(float(loss))
        return loss

    def evaluate(self) -> dict[str, float]:
        sets = self.items_sets
        return evaluate(
            self.encode_items,
            self.preprocess_inputs(sets.test_sessions),
            sets.items,
            encode_queries=self.encode_queries,
            pool_metrics=self.metric_calculators or POOL,
            ranker=self.ranker,
            is_similarity=self.is_similarity,
        )

    def on_validation_epoch_end(self) -> float:
        mean_loss = sum(self._val_losses) / len(self._val_losses) if self._val_losses else 0.0
        metrics = {"val_loss": mean_loss, **self.evaluate()}
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
