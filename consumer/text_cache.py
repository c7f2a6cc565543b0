"""Which catalog texts this consumer already wrote, so repeats are not sent to Redis again.

Search services often attach item texts to every result list; the same text then arrives
thousands of times. The apply script ignores a text equal to the stored one, so sending it
is pure cost (half of Redis's time in ``bench/ingest.py``). The cache is bounded in size;
a miss only means the text is sent and compared in Redis.
"""

from collections.abc import Mapping
from itertools import filterfalse


class TextCache:
    def __init__(self, max_items: int = 100_000) -> None:
        self.max_items = max_items
        self._texts: dict[str, str] = {}

    def changed(self, texts: Mapping[str, str]) -> dict[str, str]:
        """The texts worth sending; they are remembered as sent."""
        known = self._texts
        if known.items() >= texts.items():  # the usual case, checked in one C call
            return {}
        # filterfalse over the items view runs in C (a per-item Python loop cost ~10 us a
        # search); a view's set difference would walk the whole cache instead.
        out = dict(filterfalse(known.items().__contains__, texts.items()))
        if out:
            known.update(out)
            if len(known) > self.max_items:
                # Forget the oldest half: dicts keep insertion order.
                for item in list(known)[: len(known) // 2]:
                    del known[item]
        return out
