"""Token ids of a task's texts, tokenised once per task instead of once per step.

Every trial of a task trains and evaluates on the same query and item texts with the same
tokenizer, so they are tokenised once, when the search starts, and each batch is sliced
from the cache and padded to its own longest text: the same tensors the model's
``preprocess`` would give for that batch (``tests/trainer/test_token_cache.py``), without
tokenising a text again per step, per epoch and per trial.
"""

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from torch import Tensor

Features = dict[str, Any]  # what SentenceTransformer.forward takes


def tokenizer_key(model: SentenceTransformer) -> tuple[Any, ...]:
    """What decides a text's token ids: the tokenizer and the truncation length."""
    tok = getattr(model, "tokenizer", None)
    return (
        type(tok).__name__,
        getattr(tok, "name_or_path", None),
        len(tok) if tok is not None else None,
        model.max_seq_length,
    )


def _preprocess(model: SentenceTransformer, texts: Sequence[str]) -> Features:
    # sentence-transformers 5.x renamed ``tokenize`` to ``preprocess``; 3.x/4.x lack it.
    fn = getattr(model, "preprocess", None) or model.tokenize
    return fn(list(texts))


def _smallest_int(values: Tensor) -> torch.dtype:
    lo, hi = int(values.min()), int(values.max())
    for dtype in (torch.int8, torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    return torch.int64


class TokenCache:
    """Padded token tensors of ``texts`` (one row each), and each row's length.

    Rows are stored right- or left-padded to the longest text, as the tokenizer pads, in the
    smallest integer type that holds them (a 100k-text catalog at 64 tokens: ~40 MB);
    :meth:`features` slices a batch to its own longest text and restores the dtypes.
    """

    def __init__(
        self, model: SentenceTransformer, texts: Iterable[str], *, chunk_size: int = 2048
    ) -> None:
        self.key = tokenizer_key(model)
        unique = list(dict.fromkeys(texts))
        self.row = {text: n for n, text in enumerate(unique)}
        self._dtypes: dict[str, torch.dtype] = {}
        self._extra: dict[str, Any] = {}
        # Which side padding goes and what it is made of, from two texts of different length.
        probe = _preprocess(model, ["a", "a a a a a a"])
        mask = probe["attention_mask"]
        self.left = bool(mask[0, 0] == 0)
        pad_at = 0 if self.left else -1
        self._pad = {k: int(v[0, pad_at]) for k, v in probe.items() if isinstance(v, Tensor)}
        chunks = [
            _preprocess(model, unique[i : i + chunk_size])
            for i in range(0, len(unique), chunk_size)
        ]
        width = max((c["attention_mask"].shape[1] for c in chunks), default=1)
        self.tensors: dict[str, Tensor] = {}
        lengths = []
        for key, pad in self._pad.items():
            parts = [self._widen(c[key], width, pad) for c in chunks]
            full = torch.cat(parts) if parts else torch.zeros(0, width, dtype=torch.long)
            self._dtypes[key] = full.dtype
            self.tensors[key] = full.to(_smallest_int(full)) if full.numel() else full
        for c in chunks:
            lengths.append(c["attention_mask"].sum(dim=1))
        self.lengths = torch.cat(lengths) if lengths else torch.zeros(0, dtype=torch.long)
        # Non-tensor entries (sentence-transformers 5's "modality") go with every batch.
        if chunks:
            self._extra = {k: v for k, v in chunks[0].items() if not isinstance(v, Tensor)}
        else:
            self._extra = {k: v for k, v in probe.items() if not isinstance(v, Tensor)}

    def _widen(self, t: Tensor, width: int, pad: int) -> Tensor:
        if t.shape[1] == width:
            return t
        fill = t.new_full((t.shape[0], width - t.shape[1]), pad)
        return torch.cat([fill, t] if self.left else [t, fill], dim=1)

    def __len__(self) -> int:
        return len(self.row)

    def __contains__(self, text: object) -> bool:
        return text in self.row

    def matches(self, model: SentenceTransformer) -> bool:
        return tokenizer_key(model) == self.key

    def rows(self, texts: Sequence[str]) -> Tensor:
        return torch.tensor([self.row[t] for t in texts], dtype=torch.long)

    def features(self, rows: Tensor) -> Features:
        """The model inputs of ``rows``, padded to the longest of them."""
        if len(rows) == 0:
            raise ValueError("no rows")
        longest = int(self.lengths[rows].max())
        width = next(iter(self.tensors.values())).shape[1]
        cols = slice(width - longest, width) if self.left else slice(0, longest)
        out: Features = {k: v[rows, cols].to(self._dtypes[k]) for k, v in self.tensors.items()}
        out.update(self._extra)
        return out

    def by_length(self, texts: Sequence[str]) -> list[int]:
        """Positions of ``texts`` ordered by token length: chunks of similar length pad
        little when a whole pool is encoded."""
        lengths = self.lengths[self.rows(texts)].tolist()
        return sorted(range(len(texts)), key=lambda i: lengths[i])
