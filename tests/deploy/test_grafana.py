"""The Grafana dashboard: data source from a variable, the panels the issue lists, a
layout without overlaps, and legends that name labels the queries keep."""

import re

from tests.deploy.paths import dashboard

REQUIRED_PANELS = {
    "Ingest rate",
    "Consumer lag",
    "Dead letters by reason",
    "Open batch",
    "Releases and tasks",
    "Task and trial durations",
    "Trials",
    "Best metric vs baseline",
    "Dependency errors",
    "Failed tasks and trials",
}


def panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_the_data_source_is_a_variable() -> None:
    [variable] = [v for v in dashboard()["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    assert "clicktune-prometheus" not in str(dashboard())  # no provisioned uid baked in


def test_the_panels_the_operations_need_are_there() -> None:
    titles = {p["title"] for p in panels()}
    assert titles >= REQUIRED_PANELS, REQUIRED_PANELS - titles
    assert all(p["targets"] for p in panels())


def test_layout_ids_and_identity() -> None:
    board = dashboard()
    assert board["uid"] == "clicktune"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        xs, ys = range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])
        area = {(x, y) for x in xs for y in ys}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_legends_name_labels_the_query_keeps() -> None:
    checked = 0
    for panel in panels():
        for target in panel["targets"]:
            legend_labels = set(re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")))
            if not legend_labels:
                continue
            expr = target["expr"]
            by = re.match(r"\w+ by \(([^)]*)\)", expr)
            kept = {x.strip() for x in by[1].split(",")} if by else None
            if kept is not None:  # an aggregation keeps only its by-labels
                assert legend_labels <= kept, (panel["title"], expr)
                checked += 1
    assert checked >= 8
