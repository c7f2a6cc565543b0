"""EmbeddingsFineTuner's contracts: optimizer validation, real freezing, separate models."""

from itertools import pairwise

import lightning
import pytest
import torch
from sentence_transformers import SentenceTransformer

from trainer.fine_tuner import EmbeddingsFineTuner, ItemsSets, freeze_lower_layers, identity_query
from trainer.losses import InBatchContrastiveLoss
from trainer.model_source import base_model_path, offline
from trainer.params import FineTuningParams
from trainer.ranking_data import Pair, Session


@pytest.fixture(scope="module")
def model_path() -> str:
    offline()
    return base_model_path("all-MiniLM-L6-v2")


def _module(model, params: FineTuningParams | None = None, **kwargs) -> EmbeddingsFineTuner:
    sets = ItemsSets([Pair("q", "a", "b", 1.0)], [], [], {"a": "lamp", "b": "chair"})
    return EmbeddingsFineTuner(
        model,
        sets,
        identity_query,
        InBatchContrastiveLoss(),
        params or FineTuningParams(schedule="step"),
        **kwargs,
    )


@pytest.mark.parametrize(
    ("step_size", "gamma", "says"),
    [
        (0, 0.9, "step_size"),
        (-5, 0.9, "step_size"),
        (2.5, 0.9, "step_size"),
        (True, 0.9, "step_size"),
        (10, 1.0, "gamma"),
        (10, 0.0, "gamma"),
        (10, 1, "gamma"),
    ],
)
def test_configure_optimizers_validates(model_path: str, step_size, gamma, says) -> None:
    module = _module(
        SentenceTransformer(model_path, device="cpu"), step_size=step_size, gamma=gamma
    )
    with pytest.raises(ValueError, match=says):
        module.configure_optimizers()


def test_one_or_two_optimizers_and_schedulers_that_step(model_path: str) -> None:
    model = SentenceTransformer(model_path, device="cpu")
    one = _module(model, step_size=1, gamma=0.5).configure_optimizers()
    assert isinstance(one, dict)
    optimizer, scheduler = one["optimizer"], one["lr_scheduler"]["scheduler"]
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr * 0.5)
    two = _module((model, SentenceTransformer(model_path, device="cpu"))).configure_optimizers()
    assert isinstance(two, list) and len(two) == 2


def test_freezing_really_freezes(model_path: str) -> None:
    model = SentenceTransformer(model_path, device="cpu")
    frozen = freeze_lower_layers(model, 2)
    backbone = model[0].auto_model
    assert frozen > 0
    assert not any(p.requires_grad for p in backbone.embeddings.parameters())
    assert not any(p.requires_grad for p in backbone.encoder.layer[1].parameters())
    assert all(p.requires_grad for p in backbone.encoder.layer[2].parameters())
    before = backbone.encoder.layer[0].attention.self.query.weight.clone()
    top_before = backbone.encoder.layer[5].attention.self.query.weight.clone()
    module = _module(model, step_size=10, gamma=0.9)
    optimizer = module.configure_optimizers()["optimizer"]
    loss = module.loss_func(module._pair_batch([Pair("q", "a", "b", 1.0)]))
    loss.backward()
    optimizer.step()
    assert torch.equal(backbone.encoder.layer[0].attention.self.query.weight, before)
    assert not torch.equal(backbone.encoder.layer[5].attention.self.query.weight, top_before)


def test_preprocess_inputs_fills_missing_ranks() -> None:
    s = Session("s", "q", (("a", 0), ("b", 2), ("c", None)), frozenset({"a"}))  # type: ignore[arg-type]
    [filled] = EmbeddingsFineTuner.preprocess_inputs([s])
    assert filled.shown == (("a", 1), ("b", 2), ("c", 3))


def _fit(module: EmbeddingsFineTuner, callback: lightning.Callback) -> lightning.Trainer:
    trainer = lightning.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[callback],
    )
    trainer.fit(module)
    return trainer


def test_the_linear_schedule_warms_up_then_decays_to_zero(model_path: str) -> None:
    model = SentenceTransformer(model_path, device="cpu")
    pairs = [Pair(f"q{i}", f"i{i}", "", 1.0) for i in range(8)]
    sets = ItemsSets(pairs, [], [], {f"i{i}": f"item {i}" for i in range(8)})
    params = FineTuningParams(schedule="linear", warmup_ratio=0.25, batch_size=2)
    module = EmbeddingsFineTuner(
        model, sets, identity_query, InBatchContrastiveLoss(), params, batch_size=2
    )
    rates: list[float] = []

    class Record(lightning.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = _fit(module, Record())
    # 8 steps: 2 of warm-up from 0, the peak, then down to 0 after the last step.
    assert len(rates) == 8
    assert rates[0] == 0.0 and rates[1] < rates[2] == pytest.approx(params.learning_rate)
    assert all(a > b for a, b in pairwise(rates[2:]))
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.0


@pytest.mark.parametrize("max_norm", [1e-3, 0.0])
def test_gradients_are_clipped_to_the_max_norm(model_path: str, max_norm: float) -> None:
    model = SentenceTransformer(model_path, device="cpu")
    pairs = [Pair(f"q{i}", f"i{i}", "", 1.0) for i in range(4)]
    sets = ItemsSets(pairs, [], [], {f"i{i}": f"item {i}" for i in range(4)})
    params = FineTuningParams(max_grad_norm=max_norm, batch_size=4)
    module = EmbeddingsFineTuner(
        model, sets, identity_query, InBatchContrastiveLoss(), params, batch_size=4
    )
    norms: list[float] = []

    class Record(lightning.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            grads = [p.grad.norm() for p in pl_module.parameters() if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack(grads))))

    _fit(module, Record())
    assert len(norms) == 2
    if max_norm:
        assert max(norms) <= max_norm * 1.01
    else:  # unclipped, the same steps' gradients are far larger
        assert min(norms) > 1e-2
