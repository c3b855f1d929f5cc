"""What ``GET /metrics`` of ``genprint serve`` counts, in Prometheus' text format.

For an operator watching a running service (a trust-and-safety pipeline, say), not for a
forensic answer: how many requests and images came, what the model answered — per source and
``unknown``, so a rising share of ``unknown`` or of one source shows up on a dashboard — which
files could not be used and why, how long answers took and waited for the model, and how many
requests are in flight. Labels are bounded: the model's sources, ``unknown``, the reader's
error codes, the server's own paths and HTTP status codes.

Each application has its own registry (two servers in one process do not mix their counts).
Needs ``prometheus-client`` (part of the ``serve`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genprint.results import Attribution

KNOWN_PATHS = ("/attribute", "/model", "/health", "/metrics")
"""Paths counted by name; any other is counted as ``other`` (bounded labels)."""

SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Histogram buckets, in seconds, of the model's time per request and of the wait for it."""


class ServeMetrics:
    """The counters of one application (see the module doc)."""

    def __init__(self, method: str, model_sha256: str | None, version: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("genprint_http_requests", "HTTP requests answered, by path and "
                                "status code", ["path", "status"], registry=self.registry)
        self.answers = Counter("genprint_answers", "Images answered, by label (a source or "
                               "unknown)", ["label"], registry=self.registry)
        self.errors = Counter("genprint_image_errors", "Uploaded files that could not be used, "
                              "by error code", ["error_code"], registry=self.registry)
        self.model_seconds = Histogram("genprint_model_seconds", "Time the model spent on one "
                                       "request (reading and attributing its files)",
                                       buckets=SECONDS_BUCKETS, registry=self.registry)
        self.wait_seconds = Histogram("genprint_wait_seconds", "Time a request waited for the "
                                      "model (one request is answered at a time)",
                                      buckets=SECONDS_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("genprint_requests_in_flight", "POST /attribute requests being "
                               "answered or waiting for the model", registry=self.registry)
        info = Gauge("genprint_model_info", "The model served (always 1)",
                     ["method", "model_sha256", "genprint_version"], registry=self.registry)
        info.labels(method, model_sha256 or "not saved", version).set(1)

    def request(self, path: str, status: int) -> None:
        """Count one answered HTTP request."""
        self.requests.labels(path if path in KNOWN_PATHS else "other", str(status)).inc()

    def rows(self, rows: Sequence[Attribution]) -> None:
        """Count the answers of one request: a label per image, an error code per file."""
        for row in rows:
            if row.ok:
                self.answers.labels(str(row.label)).inc()
            else:
                self.errors.labels(str(row.error_code or "unknown_error")).inc()

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def metrics_or_none(**kwargs: Any) -> ServeMetrics | None:
    """:class:`ServeMetrics`, or None when ``prometheus-client`` is not installed."""
    try:
        return ServeMetrics(**kwargs)
    except ImportError:
        return None
