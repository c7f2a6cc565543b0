"""EmbeddingsFineTuner's contracts: optimizer validation, real freezing, separate models."""

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


def _module(model, **kwargs) -> EmbeddingsFineTuner:
    sets = ItemsSets([Pair("q", "a", "b", 1.0)], [], [], {"a": "lamp", "b": "chair"})
    return EmbeddingsFineTuner(
        model, sets, identity_query, InBatchContrastiveLoss(), FineTuningParams(), **kwargs
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
