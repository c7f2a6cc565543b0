"""Ranking data from a frozen batch: pairs, skip-above, irrelevant sessions, the split."""

from trainer.confidence import ConstantConfidence, ExaminationConfidence
from trainer.ranking_data import RankingData, Session, split_by_query


def _data(sessions: list[Session]) -> RankingData:
    items = {i: f"text {i}" for s in sessions for i, _ in s.shown}
    return RankingData("b1", sessions, [], items)


def test_skips_above_the_click_weigh_more_than_below() -> None:
    s = Session("s", "q", (("a", 1), ("b", 2), ("c", 3), ("d", 4)), frozenset({"c"}))
    pairs = _data([s]).pairs([s], ConstantConfidence(), skip_above_weight=2.0)
    weights = {(p.positive, p.negative): p.weight for p in pairs}
    assert weights == {("c", "a"): 2.0, ("c", "b"): 2.0, ("c", "d"): 1.0}


def test_position_confidence_scales_negatives() -> None:
    s = Session("s", "q", (("a", 1), ("b", 5)), frozenset({"a"}))
    [pair] = _data([s]).pairs([s], ExaminationConfidence(eta=1.0, floor=0.0))
    assert (pair.negative, pair.weight) == ("b", 0.2)


def test_irrelevant_sessions_make_every_shown_item_a_negative() -> None:
    s = Session("s", "q", (("a", 1), ("b", 2)), frozenset(), irrelevant=True)
    pairs = _data([s]).pairs([s], ConstantConfidence())
    assert [(p.positive, p.negative) for p in pairs] == [("", "a"), ("", "b")]


def test_clicked_items_are_not_negatives_of_their_own_session() -> None:
    s = Session("s", "q", (("a", 1), ("b", 2), ("c", 3)), frozenset({"a", "c"}))
    pairs = _data([s]).pairs([s], ConstantConfidence())
    assert {p.negative for p in pairs} == {"b"}
    assert {p.positive for p in pairs} == {"a", "c"}


def test_items_without_text_are_left_out() -> None:
    s = Session("s", "q", (("a", 1), ("b", 2)), frozenset({"a"}))
    data = RankingData("b1", [s], [], {"a": "text a"})
    [pair] = data.pairs([s])
    assert (pair.positive, pair.negative) == ("a", "")


def test_split_is_by_query_and_deterministic() -> None:
    sessions = [
        Session(f"s{i}", f"query {i % 40}", (("a", 1),), frozenset({"a"})) for i in range(400)
    ]
    train, test = split_by_query("b1", sessions, 0.25)
    again = split_by_query("b1", list(reversed(sessions)), 0.25)
    assert {s.session_id for s in test} == {s.session_id for s in again[1]}
    assert not {s.query for s in train} & {s.query for s in test}
    assert 0.1 < len(test) / len(sessions) < 0.45
    other = split_by_query("b2", sessions, 0.25)[1]
    assert {s.query for s in other} != {s.query for s in test}


def test_each_positive_keeps_its_strongest_negatives() -> None:
    shown = tuple((f"i{r}", r) for r in range(1, 11))
    s = Session("s", "q", shown, frozenset({"i5"}))
    pairs = _data([s]).pairs(
        [s], ExaminationConfidence(eta=1.0, floor=0.0), skip_above_weight=2.0, max_negatives=3
    )
    # Skips above the click, highest first, outweigh anything below it.
    assert [p.negative for p in pairs] == ["i1", "i2", "i3"]
    assert len(_data([s]).pairs([s], max_negatives=20)) == 9


def test_no_hard_negatives_gives_one_row_per_click() -> None:
    s = Session("s", "q", (("a", 1), ("b", 2), ("c", 3)), frozenset({"a", "c"}))
    irrelevant = Session("t", "r", (("d", 1), ("e", 2)), frozenset(), irrelevant=True)
    data = _data([s, irrelevant])
    pairs = data.pairs([s, irrelevant], max_negatives=0)
    assert sorted((p.query, p.positive, p.negative) for p in pairs) == [
        ("q", "a", ""),
        ("q", "c", ""),
    ]


def test_irrelevant_sessions_keep_their_top_ranked_negatives() -> None:
    shown = tuple((f"i{r}", r) for r in (3, 1, 2, 4))
    s = Session("s", "q", shown, frozenset(), irrelevant=True)
    pairs = _data([s]).pairs([s], ConstantConfidence(), max_negatives=2)
    assert [p.negative for p in pairs] == ["i1", "i2"]
