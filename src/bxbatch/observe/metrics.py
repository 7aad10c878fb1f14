"""Prometheus metrics of one bxbatch process: counters fed by the observer, gauges read from its last view.

Served by ``serve`` on ``--metrics-port`` (prometheus_client's own HTTP server, a daemon
thread) while the run lives. Each process sharing a run serves its own: sum the counters over
instances (``sum without (instance) (rate(bxbatch_rows_written_total[1m]))``); the gauges are
per process. Counters are updated in the event loop (prometheus_client's are thread-safe);
gauges come from the view the sampler refreshes every second in the event loop, so a scrape
(in the server's thread) never touches the throttle or the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bxbatch import __version__

# Chunk transactions aim at --target-chunk-ms (300 ms by default); a long tail is what matters.
CHUNK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
PHASES = ("preflight", "backup", "schema", "triggers", "backfill", "indexes", "constraints", "validate", "cleanup")
THROTTLE_MODES = ("full_speed", "throttled", "paused", "stopping")

# Every metric name this module exports (the Grafana dashboard's test checks its queries against it).
COUNTERS = ("bxbatch_rows_written_total", "bxbatch_chunks_total", "bxbatch_retries_total")
HISTOGRAMS = ("bxbatch_chunk_duration_seconds",)
GAUGES = (
    "bxbatch_run_info",
    "bxbatch_phase",
    "bxbatch_concurrency",
    "bxbatch_concurrency_max",
    "bxbatch_chunk_scale",
    "bxbatch_duty",
    "bxbatch_throttle_state",
    "bxbatch_paused_seconds",
    "bxbatch_throttled_seconds",
    "bxbatch_health_signal_value",
    "bxbatch_health_signal_threshold",
    "bxbatch_health_signal_critical",
    "bxbatch_probe_baseline_seconds",
    "bxbatch_index_build_phase",
    "bxbatch_index_build_done",
    "bxbatch_index_build_total",
    "bxbatch_job_rows_expected",
    "bxbatch_eta_seconds",
)


def exported_names() -> set[str]:
    """Every series name a scrape can show (histograms add _bucket, _sum, _count; counters _created)."""
    names = set(GAUGES)
    names.update(COUNTERS)
    names.update(c.removesuffix("_total") + "_created" for c in COUNTERS)
    for h in HISTOGRAMS:
        names.update({h + "_bucket", h + "_sum", h + "_count", h + "_created"})
    return names


def _seconds(value: float, unit: str) -> tuple[float, str]:
    """Prometheus base units: milliseconds become seconds."""
    return (value / 1000.0, "seconds") if unit == "ms" else (value, {"s": "seconds", "": "count"}.get(unit, unit))


class _Gauges(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Any]:
        obs = self.m.observer
        view: dict[str, Any] | None = obs.last_view
        info = GaugeMetricFamily(
            "bxbatch_run_info", "The run this process works on", labels=["run_id", "host", "pid", "command", "version"]
        )
        info.add_metric([str(obs.run_id), obs.host, str(obs.pid), obs.command, __version__], 1)
        yield info
        phase = GaugeMetricFamily("bxbatch_phase", "1 for the phase this process is in, else 0", labels=["phase"])
        for name in PHASES:
            phase.add_metric([name], 1 if obs.current_phase == name else 0)
        yield phase
        expected = GaugeMetricFamily("bxbatch_job_rows_expected", "Rows a backfill job should write", labels=["job"])
        eta = GaugeMetricFamily(
            "bxbatch_eta_seconds", "Seconds left of a running backfill job (all processes, as status)", labels=["job"]
        )
        for job, counts in sorted(obs.jobs.items()):
            if counts.expected is not None:
                expected.add_metric([job], counts.expected)
            if counts.eta_s is not None:
                eta.add_metric([job], counts.eta_s)
        yield expected
        yield eta
        if view is not None:
            yield from self._throttle(view)
        yield from self._indexes(obs)

    def _throttle(self, view: dict[str, Any]) -> Iterator[Any]:
        for name, help_, key in (
            ("bxbatch_concurrency", "Workers allowed to run chunks now", "concurrency"),
            ("bxbatch_concurrency_max", "Ceiling of the workers (--concurrency or `bxbatch set`)", "max_concurrency"),
            ("bxbatch_chunk_scale", "Multiplier of the adaptive chunk size (1 = not cut)", "chunk_scale"),
            ("bxbatch_duty", "Share of time the workers may spend in chunks (1 = no resting)", "duty"),
            ("bxbatch_paused_seconds", "Seconds the throttle held the run paused", "paused_seconds"),
            (
                "bxbatch_throttled_seconds",
                "Worker-seconds the throttle held back, over the ceiling",
                "throttled_seconds",
            ),
        ):
            g = GaugeMetricFamily(name, help_)
            g.add_metric([], float(view[key]))
            yield g
        state = GaugeMetricFamily(
            "bxbatch_throttle_state",
            "1 for the throttle's mode; signal names the health signals holding it back",
            labels=["state", "signal"],
        )
        for mode in THROTTLE_MODES:
            state.add_metric([mode, view["holding"] if mode == view["mode"] else ""], 1 if mode == view["mode"] else 0)
        yield state
        value = GaugeMetricFamily("bxbatch_health_signal_value", "Latest reading", labels=["signal", "unit"])
        limit = GaugeMetricFamily("bxbatch_health_signal_threshold", "Bad above this", labels=["signal", "unit"])
        crit = GaugeMetricFamily("bxbatch_health_signal_critical", "Pauses above this", labels=["signal", "unit"])
        for name, s in sorted(view["signals"].items()):
            for family, key in ((value, "value"), (limit, "limit"), (crit, "critical")):
                v, unit = _seconds(float(s[key]), s["unit"])
                family.add_metric([name, unit], v)
        yield value
        yield limit
        yield crit
        if view.get("probe_baseline_ms") is not None:
            base = GaugeMetricFamily("bxbatch_probe_baseline_seconds", "The probe's latency measured before the run")
            base.add_metric([], view["probe_baseline_ms"] / 1000.0)
            yield base

    def _indexes(self, obs: Any) -> Iterator[Any]:
        phase = GaugeMetricFamily(
            "bxbatch_index_build_phase", "1 per index build in progress, by phase", labels=["index", "table", "phase"]
        )
        done = GaugeMetricFamily(
            "bxbatch_index_build_done", "Blocks (or tuples) done in the build's phase", labels=["index", "unit"]
        )
        total = GaugeMetricFamily(
            "bxbatch_index_build_total", "Blocks (or tuples) of the phase", labels=["index", "unit"]
        )
        for name, s in sorted(dict(obs.indexes).items()):
            phase.add_metric([name, s.table, s.phase], 1)
            done.add_metric([name, s.unit], s.done)
            total.add_metric([name, s.unit], s.total)
        yield phase
        yield done
        yield total


class Metrics:
    """The registry of one run observer: counters and a histogram fed by it, gauges from its last view."""

    def __init__(self, observer: Any) -> None:
        self.observer = observer
        self.registry = CollectorRegistry(auto_describe=True)
        self.rows = Counter(
            "bxbatch_rows_written",
            "Rows written by committed chunks (kind: main / catchup / reconcile pass)",
            ["job", "kind"],
            registry=self.registry,
        )
        self.chunks = Counter(
            "bxbatch_chunks",
            "Chunks finished, by outcome (done, split: bisected, failed, gone: left pending)",
            ["job", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "bxbatch_chunk_duration_seconds",
            "Duration of committed chunk statements",
            ["job"],
            buckets=CHUNK_BUCKETS,
            registry=self.registry,
        )
        self.retries = Counter(
            "bxbatch_retries",
            "Chunk retries by error class (transient, connection, data)",
            ["class"],
            registry=self.registry,
        )
        for cls in ("transient", "connection", "data"):
            self.retries.labels(cls)  # present at 0 from the start: rate() needs the first sample
        self.registry.register(_Gauges(self))
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}

    def chunk(self, job: str, kind: str, status: str, rows: int, seconds: float) -> None:
        # the labelled children are looked up once: labels() costs more than the increment itself
        children = self._children.get((job, kind, status))
        if children is None:
            children = self._children[(job, kind, status)] = (
                self.chunks.labels(job, status),
                self.rows.labels(job, kind),
                self.duration.labels(job),
            )
        chunks, rows_written, duration = children
        chunks.inc()
        if status == "done":
            rows_written.inc(rows)
            duration.observe(seconds)

    def retry(self, error_class: str) -> None:
        self.retries.labels(error_class).inc()


class Server:
    """prometheus_client's HTTP server on a daemon thread; ``close`` stops it."""

    def __init__(self, metrics: Metrics, port: int, addr: str) -> None:
        from prometheus_client import start_http_server

        self.httpd, self.thread = start_http_server(port, addr=addr, registry=metrics.registry)
        self.port = int(self.httpd.server_port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
