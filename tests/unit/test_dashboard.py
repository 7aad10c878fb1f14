"""The Grafana dashboard's queries name only metrics (and labels) that bxbatch exports: checked against a real
registry filled through the observer, as a run fills it, and scraped with prometheus_client's parser."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bxbatch.live.health import Signal
from bxbatch.live.throttle import Throttle
from bxbatch.observe.metrics import Metrics, exported_names
from bxbatch.observe.observer import RunObserver
from bxbatch.settings import Settings

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "grafana-bxbatch.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "le", "and", "or", "unless"}


class _Monitor:
    baseline_ms = 1.5


def _scrape() -> dict[str, set[str]]:
    """Every series name a running process exports, with its label names."""
    obs = RunObserver(7, "host-a", 123, "run")
    obs.metrics = Metrics(obs)
    throttle = Throttle(Settings(concurrency=4), log=None)
    throttle.observe("probe", [Signal("probe_latency", 9.0, 5.0, 10.0, "ms")])  # bad: cuts
    obs.attach_throttle(throttle)
    obs.attach_health(_Monitor())
    obs.phase("backfill", "running")
    obs.chunk("permissions", "main", "done", 500, 0.12)
    obs.chunk("permissions", "reconcile", "done", 3, 0.05)
    obs.chunk("activity_seed", "main", "split", 0, 0.0)
    obs.retry("transient")
    obs.job("permissions").expected = 1000
    obs.job("permissions").eta_s = 12.5
    obs.index_progress("idx_a", "database_activitylog", "building index: scanning table", 10, 100, "blocks")
    obs.snapshot()  # what the sampler does every second: refreshes the gauges' view
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(obs.metrics.registry).decode()):
        for s in family.samples:
            names.setdefault(s.name, set()).update(s.labels)
    return names


def _queries() -> list[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_dashboard_queries_name_only_exported_metrics_and_labels() -> None:
    exported = _scrape()
    assert set(exported) <= exported_names()  # the declared list (the e2e scrape test checks it too) is honest
    queries = _queries()
    assert len(queries) >= 15
    used: set[str] = set()
    for expr in queries:
        names = set(re.findall(r"\bbxbatch_[a-z_]+\b", expr))
        assert names, expr
        missing = names - set(exported)
        assert not missing, f"{expr}: {missing} not exported"
        used |= names
        labels = set(exported[next(iter(names))]) | {"instance", "job"}  # Prometheus adds instance and job
        for n in names:
            labels |= exported[n]
        for group in re.findall(r"(?:by|without|ignoring|on)\s*\(([^)]*)\)", expr):
            for label in (x.strip() for x in group.split(",") if x.strip()):
                assert label in labels, f"{expr}: label {label} not on {names}"
        for label in re.findall(r"[{,]\s*([a-z_]+)\s*=~?", expr):
            assert label in labels, f"{expr}: label {label} not on {names}"
    # and the dashboard shows every family a run exports
    family = re.compile(r"_(total|bucket|sum|count|created)$")
    assert {family.sub("", n) for n in exported} <= {family.sub("", n) for n in used}
