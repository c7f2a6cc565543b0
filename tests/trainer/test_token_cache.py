"""The task's token cache gives the very tensors per-step tokenisation gives, and the
fine-tuner's batches, embeddings and validation loss do not change with it."""

import random

import pytest
import torch
from sentence_transformers import SentenceTransformer

from trainer.fine_tuner import (
    EmbeddingsFineTuner,
    ItemsSets,
    Tokens,
    encode_texts,
    identity_query,
    make_token_batch,
)
from trainer.losses import InBatchContrastiveLoss, MarginRankingLoss
from trainer.model_source import base_model_path, offline
from trainer.params import FineTuningParams
from trainer.ranking_data import Pair, Session
from trainer.token_cache import TokenCache, _preprocess

TEXTS = [
    "lamp",
    "  Lamp  ",  # the tokenizer strips and lower-cases: same ids as "lamp", its own row
    "orbit desk lamp with USB charging port, warm white",
    "café crème kettle 1.7 l",
    "x",
    " ".join(["very long product title"] * 40),  # truncated at max_seq_length
    "",
    "chair",
    "lamp",  # a duplicate
]


@pytest.fixture(scope="module")
def model() -> SentenceTransformer:
    offline()
    m = SentenceTransformer(base_model_path("all-MiniLM-L6-v2"), device="cpu")
    m.max_seq_length = 32
    return m.eval()


def _equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype, key
            assert torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


def test_cached_features_equal_the_models_own_tokenisation(model: SentenceTransformer) -> None:
    cache = TokenCache(model, TEXTS, chunk_size=3)  # several chunks of different widths
    assert len(cache) == len(TEXTS) - 1
    rng = random.Random(0)
    unique = list(dict.fromkeys(TEXTS))
    for _ in range(30):
        subset = rng.sample(unique, rng.randint(1, len(unique)))
        _equal(cache.features(cache.rows(subset)), _preprocess(model, subset))
    assert int(cache.lengths.max()) == model.max_seq_length  # the long title, truncated


def test_left_padding_tokenizers_are_cached_as_they_pad(model: SentenceTransformer) -> None:
    side = model.tokenizer.padding_side
    model.tokenizer.padding_side = "left"
    try:
        cache = TokenCache(model, TEXTS)
        assert cache.left
        subset = ["x", "orbit desk lamp with USB charging port, warm white", "chair"]
        _equal(cache.features(cache.rows(subset)), _preprocess(model, subset))
    finally:
        model.tokenizer.padding_side = side


def test_a_cache_of_another_length_or_text_is_not_used(model: SentenceTransformer) -> None:
    cache = TokenCache(model, TEXTS)
    assert cache.matches(model)
    tokens = Tokens(model, cache)
    _equal(tokens(["not cached", "lamp"]), _preprocess(model, ["not cached", "lamp"]))
    model.max_seq_length = 16
    try:
        assert not cache.matches(model)
        assert Tokens(model, cache).cache is None
    finally:
        model.max_seq_length = 32


def _sets() -> ItemsSets:
    items = {f"i{n}": t for n, t in enumerate(TEXTS[2:8])} | {"dup": TEXTS[0]}
    ids = sorted(items)
    rng = random.Random(1)
    queries = ["lamp for desk", "kettle", "Chair ", "usb lamp"]
    pairs = [Pair(rng.choice(queries), *rng.sample(ids, 2), rng.random()) for _ in range(40)] + [
        Pair("kettle", "", "i3", 0.5),
        Pair("usb lamp", "i1", "", 1.0),
    ]
    sessions = [
        Session(f"s{n}", q, ((ids[n], 1), (ids[n + 1], 2)), frozenset({ids[n]}))
        for n, q in enumerate(queries)
    ]
    return ItemsSets(pairs[:30], pairs[30:], sessions, items)


def _cache_for(model: SentenceTransformer, sets: ItemsSets) -> TokenCache:
    queries = {p.query for p in sets.train + sets.test} | {s.query for s in sets.test_sessions}
    return TokenCache(model, [*sets.items.values(), *sorted(queries)])


def test_batches_from_the_cache_equal_per_step_batches(model: SentenceTransformer) -> None:
    sets = _sets()
    cached = Tokens(model, _cache_for(model, sets))
    fresh = Tokens(model, None)
    for start in range(0, len(sets.train + sets.test), 8):
        pairs = (sets.train + sets.test)[start : start + 8]
        a = make_token_batch(pairs, sets.items, identity_query, cached, cached)
        b = make_token_batch(pairs, sets.items, identity_query, fresh, fresh)
        _equal(a.queries, b.queries)
        assert (a.items is None) == (b.items is None)
        if a.items is not None:
            _equal(a.items, b.items)
        for name in ("query_index", "positive_ids", "negative_ids", "weight"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert len(a) == len(pairs)


def test_embeddings_from_the_cache_equal_the_models_encode(model: SentenceTransformer) -> None:
    texts = list(dict.fromkeys(TEXTS))
    cached = encode_texts(model, texts, Tokens(model, TokenCache(model, texts)))
    reference = model.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    torch.testing.assert_close(cached, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("loss", [InBatchContrastiveLoss(), MarginRankingLoss(margin=0.2)])
def test_the_validation_loss_from_the_evaluation_pass_equals_per_batch_passes(
    model: SentenceTransformer, loss
) -> None:
    sets = _sets()
    module = EmbeddingsFineTuner(
        model,
        sets,
        identity_query,
        loss,
        FineTuningParams(),
        batch_size=4,
        token_cache=_cache_for(model, sets),
    ).eval()
    with torch.no_grad():
        per_batch = [
            float(loss(module._pair_batch(sets.test[i : i + 4])))
            for i in range(0, len(sets.test), 4)
        ]
        module.on_validation_epoch_start()
        reused = [
            float(module.validation_step(sets.test[i : i + 4], i))
            for i in range(0, len(sets.test), 4)
        ]
        metrics = module.evaluate()
        module._eval = None
        again = module.evaluate()  # the metrics without the epoch's embeddings
    assert reused == pytest.approx(per_batch, abs=1e-5)
    assert metrics == pytest.approx(again, abs=1e-6)
