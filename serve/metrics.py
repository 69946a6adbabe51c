"""Prometheus metrics of one service, in a registry of its own (two apps in one process never clash).

Request and problem outcomes and latencies are counted by the app (a request's outcome is "ok", an
error code, or "disconnected" for a client that left first); batch sizes come from the runtime's
batch listener; queue depth and cell-updates are read from `Runtime.stats()` at scrape, and the
work admitted and unfinished from the service.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sead.runtime.errors import RuntimeClosed

LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)
ROW_BUCKETS = tuple(2 ** i for i in range(0, 17, 2))
CELL_BUCKETS = tuple(2 ** i for i in range(4, 25, 2))


class Metrics:
    def __init__(self, service):
        self.registry = CollectorRegistry()
        self.requests = Counter("sead_requests", "POST /v1/solve requests by mode (json, ndjson) and outcome",
                                ("mode", "outcome"), registry=self.registry)
        self.problems = Counter("sead_problems", "Problems by outcome: converged, not_converged, invalid, "
                                "refused (in a request refused as a whole)", ("outcome",), registry=self.registry)
        self.latency = Histogram("sead_request_seconds", "POST /v1/solve latency, body read to last byte",
                                 ("mode",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("sead_batch_problems", "Problems per engine batch", buckets=ROW_BUCKETS,
                                    registry=self.registry)
        self.batch_cells = Histogram("sead_batch_cells", "Tape cells per engine batch", buckets=CELL_BUCKETS,
                                     registry=self.registry)
        inflight = Gauge("sead_inflight_work", "Cell-steps (an upper bound) of the requests admitted and unfinished",
                         registry=self.registry)
        inflight.set_function(lambda: service.inflight_work)
        self.runtime = None
        self.registry.register(self)  # collect() below: the runtime's gauges and counters

    def attach(self, runtime) -> None:
        """Start reading a loaded runtime: its batch listener and its stats()."""
        runtime.add_batch_listener(self.on_batch)
        self.runtime = runtime

    def on_batch(self, rows: int, cells: int) -> None:  # called from the runtime's worker threads
        self.batch_rows.observe(rows)
        self.batch_cells.observe(cells)

    def count_results(self, results) -> None:
        """results: a Results (its converged flags are an array)."""
        ok = int(results.converged.sum())
        if ok:
            self.problems.labels("converged").inc(ok)
        if len(results) - ok:
            self.problems.labels("not_converged").inc(len(results) - ok)

    def collect(self):
        """The runtime's own numbers, read when Prometheus scrapes."""
        if self.runtime is None:
            return
        try:
            s = self.runtime.stats()
        except RuntimeClosed:
            return
        yield GaugeMetricFamily("sead_queue_cells", "Cells queued in the runtime, not yet finished",
                                value=s["queued_cells"])
        yield GaugeMetricFamily("sead_queue_problems", "Problems queued in the runtime", value=s["queued_problems"])
        yield GaugeMetricFamily("sead_in_flight_problems", "Problems in engine batches now",
                                value=s["in_flight_problems"])
        yield CounterMetricFamily("sead_engine_batches", "Engine batches run", value=s["batches"])
        yield CounterMetricFamily("sead_cell_updates", "Cells x steps computed", value=s["cell_updates"])
        yield CounterMetricFamily("sead_problems_solved", "Problems the runtime finished",
                                  value=s["problems_solved"])

    def describe(self):
        return []  # collected lazily: the runtime may not be loaded yet when the registry is made

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
