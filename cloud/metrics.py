"""Prometheus metrics of one cloud process (its own registry, so several apps can coexist)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge(
            "mumu_websocket_connections",
            "Open signaling WebSocket connections on this process",
            ["role"],
            registry=self.registry,
        )
        self.active_sessions = Gauge(
            "mumu_active_watch_sessions",
            "Watch sessions started on this process and not yet ended",
            registry=self.registry,
        )
        self.messages = Counter(
            "mumu_signaling_messages",
            "Signaling messages received, by type",
            ["type"],
            registry=self.registry,
        )
        self.pairing_attempts = Counter(
            "mumu_pairing_attempts",
            "Pairing attempts, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.db_latency = Histogram(
            "mumu_db_query_seconds",
            "Database transaction latency",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        for role in ("device", "viewer"):
            self.connections.labels(role)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
