"""The consumer's memory of catalog texts it already sent to Redis."""

from consumer.text_cache import TextCache


def test_a_text_is_sent_once_and_again_only_when_it_changes() -> None:
    cache = TextCache()
    assert cache.changed(["a", "b"], ["A", "B"]) == {"a": "A", "b": "B"}
    assert cache.changed(["b", "a"], ["B", "A"]) == {}
    assert cache.changed(["a", "c"], ["A2", "C"]) == {"a": "A2", "c": "C"}
    assert cache.changed(["a"], ["A2"]) == {}


def test_results_without_a_text_send_nothing_and_forget_nothing() -> None:
    cache = TextCache()
    assert cache.changed(["a", "b"], [None, "B"]) == {"b": "B"}
    assert cache.changed(["a", "b"], [None, None]) == {}
    assert cache.changed(["a"], ["A"]) == {"a": "A"}
    assert cache.changed(["b"], ["B"]) == {}


def test_the_cache_is_bounded_and_forgets_the_oldest_half() -> None:
    cache = TextCache(max_items=4)
    cache.changed(["a", "b", "c", "d"], ["A", "B", "C", "D"])
    cache.changed(["e"], ["E"])  # over the bound: a and b forgotten (oldest first)
    assert cache.changed(["c", "d", "e"], ["C", "D", "E"]) == {}
    assert cache.changed(["a", "b"], ["A", "B"]) == {"a": "A", "b": "B"}
