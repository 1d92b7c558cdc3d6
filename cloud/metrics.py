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
        self.sessions_started = Counter(
            "mumu_watch_sessions_started",
            "Watch sessions started by this process (active = started - ended, summed over "
            "every process)",
            registry=self.registry,
        )
        self.sessions_ended = Counter(
            "mumu_watch_sessions_ended",
            "Watch sessions ended by this process, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.sessions_adopted = Counter(
            "mumu_watch_sessions_adopted",
            "Sessions a device re-claimed after this cloud forgot them (a restart), re-adopted",
            registry=self.registry,
        )
        self.watch_refused = Counter(
            "mumu_watch_requests_refused",
            "watch_request refused, by reason (forbidden, device_offline, device_busy)",
            ["reason"],
            registry=self.registry,
        )
        self.ownership_races = Counter(
            "mumu_watch_ownership_races",
            "Sessions ended while being created because the camera changed hands meanwhile",
            registry=self.registry,
        )
        self.queue_overflows = Counter(
            "mumu_websocket_queue_overflows",
            "Sockets disconnected because they read too slowly (outbound queue full)",
            ["role"],
            registry=self.registry,
        )
        self.sockets_refused = Counter(
            "mumu_websocket_refused",
            "Sockets refused by a bound (too_many_pending per address, too_many_pending_total "
            "in all, too_many_viewer_sockets per account)",
            ["reason"],
            registry=self.registry,
        )
        self.pending_sockets = Gauge(
            "mumu_websocket_pending",
            "Signaling sockets on this process whose hello has not arrived yet",
            registry=self.registry,
        )
        self.faults = Counter(
            "mumu_faults",
            "Requests answered 503 / 'unavailable' because the database or Redis failed",
            ["where"],
            registry=self.registry,
        )
        self.redis_resubscribes = Gauge(
            "mumu_redis_resubscribes",
            "Times this process's Redis pub/sub connection was re-established and resubscribed",
            registry=self.registry,
        )
        self.http_closed = Counter(
            "mumu_http_connections_closed",
            "HTTP connections closed by a bound (header_timeout, body_timeout, per_address)",
            ["reason"],
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
        self.pairing_codes_issued = Counter(
            "mumu_pairing_codes_issued",
            "Pairing codes given to cameras (each replaces the camera's previous one)",
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
            self.queue_overflows.labels(role)
        for reason in ("too_many_pending", "too_many_pending_total", "too_many_viewer_sockets"):
            self.sockets_refused.labels(reason)
        for reason in ("forbidden", "device_offline", "device_busy"):
            self.watch_refused.labels(reason)
        for reason in ("header_timeout", "body_timeout", "per_address"):
            self.http_closed.labels(reason)

        # --- accounts, passwords, limits and faults ----------------------------------------
        self.password_jobs = Counter(
            "mumu_password_jobs",
            "argon2 hash/verify jobs, by kind and outcome (rejected: the queue was full; "
            "timeout: waited too long for a worker)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.password_seconds = Histogram(
            "mumu_password_work_seconds",
            "Time one argon2 hash or verification took in its worker",
            buckets=(0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.update_downloads = Gauge(
            "mumu_update_downloads_in_flight",
            "Transfers of the update repository's files being sent",
            registry=self.registry,
        )
        self.password_inflight = Gauge(
            "mumu_password_jobs_in_flight",
            "argon2 jobs running or waiting for a worker",
            registry=self.registry,
        )
        self.auth_events = Counter(
            "mumu_auth_events",
            "Account events: sign-ins, refreshes (rotated, grace, reused), sign-outs, ...",
            ["event"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "mumu_rate_limited",
            "Requests refused by a rate limit, by limit",
            ["limit"],
            registry=self.registry,
        )
        self.http_refusals = Counter(
            "mumu_http_refusals",
            "HTTP requests answered with an error, by status and error code",
            ["status", "code"],
            registry=self.registry,
        )
        self.unavailable = Counter(
            "mumu_dependency_unavailable",
            "Requests answered 503 because a dependency failed, by dependency",
            ["dependency"],
            registry=self.registry,
        )
        self.devices_retired = Counter(
            "mumu_devices_retired",
            "Devices retired by a factory reset",
            registry=self.registry,
        )
        # --- sharing ------------------------------------------------------------------------
        self.share_events = Counter(
            "mumu_share_events",
            "Sharing events: invited_email, invited_link, accepted, declined, revoked, left, "
            "invite_cancelled",
            ["event"],
            registry=self.registry,
        )
        self.share_refused = Counter(
            "mumu_share_refused",
            "Sharing requests refused by a bound or a rule (too_many_invites, "
            "too_many_viewers, invalid, expired, own_camera, not_owner, email_unverified)",
            ["reason"],
            registry=self.registry,
        )
        # --- mail -----------------------------------------------------------------------------
        self.mail = Counter(
            "mumu_mail",
            "Mails by kind and outcome: sent, retried (the server failed; tried again later), "
            "failed (given up), dropped (the outbox was full, or the cloud stopping)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.mail_queued = Gauge(
            "mumu_mail_queued",
            "Mails waiting in this process's outbox (MUMU_MAIL_QUEUE), retries included",
            registry=self.registry,
        )
        # --- one-time account links (cloud/account_links.py) ------------------------------------
        self.account_links = Counter(
            "mumu_account_links",
            "One-time account links by purpose (verify, email, reset) and outcome: created, "
            "used, invalid, expired, used_again, email_taken, not_sent (a per-account mail rate "
            "was spent: nothing mailed, the same answer)",
            ["purpose", "outcome"],
            registry=self.registry,
        )
        self.link_origins = Counter(
            "mumu_link_origins",
            "Links put in mails by where their origin came from (cloud/link_origin.py): "
            "public_url (MUMU_PUBLIC_URL), loopback (a request to localhost, no public URL), "
            "own_address (a request named a host that is not trusted: the cloud's own address)",
            ["source"],
            registry=self.registry,
        )
        for source in ("public_url", "loopback", "own_address"):
            self.link_origins.labels(source)
        for event in (
            "invited_email",
            "invited_link",
            "accepted",
            "declined",
            "revoked",
            "left",
            "invite_cancelled",
        ):
            self.share_events.labels(event)
        for reason in (
            "too_many_invites",
            "too_many_viewers",
            "invalid",
            "expired",
            "email_unverified",
        ):
            self.share_refused.labels(reason)
        for kind in ("hash", "verify"):
            for outcome in ("done", "rejected", "timeout"):
                self.password_jobs.labels(kind, outcome)
        for dependency in ("database", "live_state"):
            self.unavailable.labels(dependency)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
