"""Which catalog texts this consumer already wrote, so repeats are not sent to Redis again.

Search services often attach item texts to every result list; the same text then arrives
thousands of times. The apply script ignores a text equal to the stored one, so sending it
is pure cost (half of Redis's time in ``bench/ingest.py``). The cache is bounded in size;
a miss only means the text is sent and compared in Redis.
"""


class TextCache:
    def __init__(self, max_items: int = 100_000) -> None:
        self.max_items = max_items
        self._texts: dict[str, str] = {}

    def changed(self, ids: list[str], texts: list[str | None]) -> dict[str, str]:
        """``item_id -> text`` of the pairs worth sending (None texts are no text); they are
        remembered as sent."""
        known = self._texts
        # The usual case, in three C-level passes: every text is the one already sent. (A
        # dict of the search's texts compared as item views cost twice as much.)
        if list(map(known.get, ids)) == texts:
            return {}
        out = {
            item: text
            for item, text in zip(ids, texts, strict=True)
            if text is not None and known.get(item) != text
        }
        if out:
            known.update(out)
            if len(known) > self.max_items:
                # Forget the oldest half: dicts keep insertion order.
                for item in list(known)[: len(known) // 2]:
                    del known[item]
        return out
