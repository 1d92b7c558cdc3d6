"""Benchmark: restarts and reconnect storms, heartbeat cost, memory over device turnover.

For each server — a bare ``websockets`` server as the floor, ``mumu-cloud`` embedded (SQLite +
in-process) and scaled (PostgreSQL + Redis) — all in the same run:

1. a holder process connects N devices, all from one address (127.0.0.1), that behave like the
   agent: heartbeat every 30 s (spread evenly), read their socket all the time (so a close is
   noticed at once), and when the connection ends come back — within the window a 1012 close
   names (``reconnect_within=``), or else after an exponential backoff with full jitter (0.5 s
   base, 30 s cap); a ``hello`` unanswered within 20 s counts as a timeout, and one answered
   with an ``error`` (a bound refused it) as refused, and either is retried after the backoff;
2. **heartbeat cost**: over a steady window, the server's CPU time, Redis commands (``INFO
   commandstats``) and database queries (``mumu_db_query_seconds_count``), per heartbeat and per
   10,000 devices;
3. **storm**: the server is stopped (SIGTERM: graceful; SIGKILL: a crash) and started again on
   the same port; measured: how long the port was closed, the time until every device is back
   (``hello_ack``), hello timeouts, refusals, and the RSS afterwards.  The clouds run with the
   bounds on sockets per address lifted (the admission rate alone), and once more with every
   setting at its default (the row "default settings": the NAT case, every camera behind one
   address, with ``MUMU_MAX_PENDING_SOCKETS_PER_ADDRESS`` as shipped);
4. **memory over turnover** (``--turnover``): 4 cycles of N/2 extra devices connecting and
   leaving a running cloud; RSS after each (it should come back).

    .venv/bin/python bench/cloud_storm.py [--devices 10000] [--steady 60] [--no-defaults] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cloud_signaling import TOKEN, raise_fd_limit, seed_devices  # noqa: E402
from device.signaling import Backoff, parse_retry_after, reconnect_delay  # noqa: E402
from tests.cloud_process import CloudProcess  # noqa: E402
from tests.services import free_port, postgres_server, redis_server, wait_for_port  # noqa: E402

HEARTBEAT_S = 30.0
HELLO_TIMEOUT_S = 20.0
HTTP_REFUSED = 'mumu_http_connections_closed_total{reason="per_address"}'


# --- the device holder (its own process) ------------------------------------------------------


def hold(ws_base: str, ids: list[str], shared: dict[str, Any], stop: Any) -> None:
    """Keep every device connected the way the agent does; count who is connected."""
    raise_fd_limit()
    connected, admitted = shared["connected"], shared["admitted"]
    timeouts, attempts, refused = shared["timeouts"], shared["attempts"], shared["refused"]

    async def device(device_id: str, sem: asyncio.Semaphore) -> None:
        backoff = Backoff(0.5, 30.0)  # the agent's defaults (device/config.py)
        first = True
        while not stop.is_set():
            code: int | None = None
            reason = ""
            wait_s: float | None = None
            try:
                async with sem if first else _nothing():
                    with attempts.get_lock():
                        attempts.value += 1
                    ws = await websockets.connect(
                        f"{ws_base}/ws/device", open_timeout=HELLO_TIMEOUT_S, ping_interval=None
                    )
                    hello = {
                        "type": "hello",
                        "payload": {"device_id": device_id, "device_token": TOKEN},
                    }
                    await ws.send(json.dumps(hello))
                    try:
                        async with asyncio.timeout(HELLO_TIMEOUT_S):
                            reply = json.loads(await ws.recv())
                    except TimeoutError:
                        with timeouts.get_lock():
                            timeouts.value += 1
                        await ws.close()
                        raise
                if reply.get("type") != "hello_ack":  # an error: refused by a bound
                    with refused.get_lock():
                        refused.value += 1
                    try:  # its close frame says how soon to come back
                        async with asyncio.timeout(HELLO_TIMEOUT_S):
                            await ws.recv()
                    except ConnectionClosed as exc:
                        if exc.rcvd is not None:
                            code, reason = exc.rcvd.code, exc.rcvd.reason
                    except TimeoutError:
                        pass
                    await ws.close()
                    raise Refused
                first = False
                backoff.reset()
                with connected.get_lock():
                    connected.value += 1
                with admitted.get_lock():
                    admitted.value += 1
                try:
                    loop = asyncio.get_running_loop()
                    beat = loop.time() + random.uniform(0, HEARTBEAT_S)
                    while True:
                        try:  # reading all the time, as the agent does: a close is seen at once
                            async with asyncio.timeout_at(beat):
                                await ws.recv()
                        except TimeoutError:
                            await ws.send('{"type":"heartbeat","payload":{}}')
                            beat += HEARTBEAT_S
                except ConnectionClosed as exc:
                    if exc.rcvd is not None:
                        code, reason = exc.rcvd.code, exc.rcvd.reason
                finally:
                    with connected.get_lock():
                        connected.value -= 1
            except InvalidStatus as exc:  # refused before the WebSocket opened (a 503)
                if exc.response.status_code in (429, 503):
                    wait_s = parse_retry_after(exc.response.headers.get("Retry-After"))
            except (OSError, TimeoutError, WebSocketException, Refused):  # reset mid-handshake...
                pass
            # what the agent waits (device.signaling.reconnect_delay): within a 1012's window,
            # a named delay and a random part of it, or the next step of its backoff
            await asyncio.sleep(reconnect_delay(backoff, code, reason, wait_s))

    async def main() -> None:
        sem = asyncio.Semaphore(200)
        tasks = [asyncio.create_task(device(i, sem)) for i in ids]
        while not stop.is_set():
            await asyncio.sleep(0.5)
        for t in tasks:
            t.cancel()

    asyncio.run(main())


class Refused(Exception):
    """The cloud answered ``hello`` with an ``error`` (a bound): back off, as the agent does."""


class _nothing:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


class Holder:
    def __init__(self, ws_base: str, ids: list[str]) -> None:
        ctx = mp.get_context("spawn")
        self.shared = {
            "connected": ctx.Value("i", 0),
            "admitted": ctx.Value("i", 0),
            "timeouts": ctx.Value("i", 0),
            "attempts": ctx.Value("i", 0),
            "refused": ctx.Value("i", 0),
        }
        self.n = len(ids)
        self.stop = ctx.Event()
        self.proc = ctx.Process(target=hold, args=(ws_base, ids, self.shared, self.stop))
        self.proc.start()

    def value(self, name: str) -> int:
        return int(self.shared[name].value)

    def wait_all(self, timeout: float = 900.0, admitted_before: int = 0) -> float:
        """Seconds until every device has been admitted (again, counting from
        ``admitted_before`` admissions)."""
        started = time.monotonic()
        while self.value("admitted") - admitted_before < self.n:
            if not self.proc.is_alive():
                raise RuntimeError("the device holder died")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"only {self.value('connected')} of {self.n} came back")
            time.sleep(0.02)
        return time.monotonic() - started

    def close(self) -> None:
        self.stop.set()
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()


# --- servers --------------------------------------------------------------------------------------


class Bare:
    label = "bare websockets (floor)"

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench/bare_relay.py"), str(self.port)]
        )
        wait_for_port(self.port, proc=self.proc)

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Cloud:
    def __init__(self, label: str, cloud: CloudProcess, redis_url: str | None) -> None:
        self.label = label
        self.cloud = cloud
        self.redis_url = redis_url

    @property
    def ws_base(self) -> str:
        return self.cloud.ws_url

    def pid(self) -> int:
        assert self.cloud.proc is not None
        return self.cloud.proc.pid

    def start(self) -> None:
        self.cloud.start(timeout=120)

    def stop(self, sig: int) -> None:
        assert self.cloud.proc is not None
        self.cloud.proc.send_signal(sig)
        self.cloud.proc.wait()

    def db_queries(self) -> float:
        text = httpx.get(f"{self.cloud.url}/metrics").text
        found = re.search(r"^mumu_db_query_seconds_count (\S+)$", text, flags=re.M)
        return float(found.group(1)) if found else 0.0

    def counter(self, name: str) -> float:
        text = httpx.get(f"{self.cloud.url}/metrics").text
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, flags=re.M)
        return float(found.group(1)) if found else 0.0

    def redis_calls(self) -> int:
        if self.redis_url is None:
            return 0
        client = redis.Redis.from_url(self.redis_url)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        return sum(int(v["calls"]) for v in stats.values())

    def close(self) -> None:
        self.cloud.stop()


# --- measurements -------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def rss_mib(pid: int) -> float:
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def steady(server: Any, devices: int, seconds: float) -> dict[str, Any]:
    """Cost of heartbeats alone over ``seconds``, per heartbeat and per 10,000 devices."""
    cloud = isinstance(server, Cloud)
    cpu0, t0 = cpu_s(server.pid()), time.monotonic()
    redis0 = server.redis_calls() if cloud else 0
    db0 = server.db_queries() if cloud else 0.0
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    cpu = cpu_s(server.pid()) - cpu0
    heartbeats = devices * elapsed / HEARTBEAT_S
    out = {
        "cpu_ms_per_heartbeat": round(1000 * cpu / heartbeats, 3),
        "cpu_pct_per_10k_devices": round(100 * cpu / elapsed * 10_000 / devices, 2),
    }
    if cloud:
        # our own /metrics scrapes make no queries; Redis calls include INFO itself (one)
        out["redis_commands_per_heartbeat"] = round(
            (server.redis_calls() - redis0 - 1) / heartbeats, 3
        )
        out["db_queries_per_heartbeat"] = round((server.db_queries() - db0) / heartbeats, 3)
    return out


def storm(server: Any, holder: Holder, sig: int) -> dict[str, Any]:
    timeouts0 = holder.value("timeouts")
    attempts0 = holder.value("attempts")
    refused0 = holder.value("refused")
    admitted0 = holder.value("admitted")
    t0 = time.monotonic()
    server.stop(sig)
    stopped = time.monotonic()
    server.start()
    reopened = time.monotonic()
    holder.wait_all(admitted_before=admitted0)
    done = time.monotonic()
    return {
        "stop_s": round(stopped - t0, 2),
        "port_closed_s": round(reopened - t0, 2),
        "all_back_s": round(done - t0, 2),
        "readmit_s": round(done - reopened, 2),
        "hello_timeouts": holder.value("timeouts") - timeouts0,
        "refused": holder.value("refused") - refused0,
        "connect_attempts": holder.value("attempts") - attempts0,
        "rss_mib_after": rss_mib(server.pid()),
        # handshakes the restarted cloud refused (503) by its bound on request heads per address
        "http_refused": int(server.counter(HTTP_REFUSED)) if isinstance(server, Cloud) else 0,
    }


def run(
    server: Any, ids: list[str], args: argparse.Namespace, modes: list[int]
) -> list[dict[str, Any]]:
    holder = Holder(server.ws_base, ids)
    rows = []
    try:
        connect_s = holder.wait_all()
        time.sleep(2)
        base = {"server": server.label, "devices": len(ids), "connect_s": round(connect_s, 1)}
        base["rss_mib"] = rss_mib(server.pid())
        if args.steady:
            base.update(steady(server, len(ids), args.steady))
        for sig in modes:
            row = dict(base)
            row["stop"] = signal.Signals(sig).name
            row.update(storm(server, holder, sig))
            rows.append(row)
            time.sleep(3)
    finally:
        holder.close()
    return rows


def turnover(server: Cloud, ids: list[str], cycles: int) -> list[float]:
    """RSS after each cycle of ``ids`` connecting and leaving (and the GC policy running)."""
    rss = [rss_mib(server.pid())]
    for _ in range(cycles):
        holder = Holder(server.ws_base, ids)
        try:
            holder.wait_all()
        finally:
            holder.close()
        time.sleep(12)  # two freeze periods of the GC policy
        rss.append(rss_mib(server.pid()))
    return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--steady", type=float, default=60.0, help="heartbeat-cost window (s)")
    parser.add_argument("--turnover", type=int, default=4, help="turnover cycles (0: none)")
    parser.add_argument("--only", choices=["bare", "embedded", "scaled"], action="append")
    parser.add_argument(
        "--no-defaults",
        dest="defaults",
        action="store_false",
        help="skip each cloud's storm at the default settings",
    )
    parser.add_argument(
        "--defaults-only",
        action="store_true",
        help="storm each cloud at its default settings only (not with the bounds lifted)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    raise_fd_limit()
    which = args.only or ["bare", "embedded", "scaled"]
    rows: list[dict[str, Any]] = []
    memory: dict[str, list[float]] = {}
    defaults = {"MUMU_JWT_SECRET": "bench-secret-" + "x" * 40}
    env = {
        **defaults,
        "MUMU_MAX_PENDING_SOCKETS_PER_ADDRESS": "100000",
        "MUMU_MAX_PENDING_SOCKETS": "100000",
        "MUMU_HTTP_CONNECTIONS_PER_ADDRESS": "100000",
    }
    no_steady = argparse.Namespace(**{**vars(args), "steady": 0})
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if "bare" in which:
            bare = Bare()
            try:
                ids = [os.urandom(16).hex() for _ in range(args.devices)]
                rows += run(bare, ids, args, [signal.SIGKILL])
            finally:
                bare.close()
        for kind in ("embedded", "scaled"):
            if kind not in which:
                continue
            extra: dict[str, str] = {}
            redis_url = None
            if kind == "embedded":
                database_url = f"sqlite:///{tmp}/{kind}.db"
                label = "mumu-cloud SQLite + in-process"
            else:
                database_url = stack.enter_context(postgres_server())
                redis_url = stack.enter_context(redis_server(tmp / "redis"))
                extra = {"MUMU_REDIS_URL": redis_url}
                label = "mumu-cloud PostgreSQL + Redis"
            ids = asyncio.run(seed_devices(database_url, args.devices * 3 // 2, f"{kind}@bench"))
            if not args.defaults_only:
                cloud = Cloud(
                    label,
                    CloudProcess(
                        tmp / kind, env={**env, **extra, "MUMU_DATABASE_URL": database_url}
                    ).start(timeout=120),
                    redis_url,
                )
                try:
                    rows += run(cloud, ids[: args.devices], args, [signal.SIGTERM, signal.SIGKILL])
                    if args.turnover:
                        memory[label] = turnover(cloud, ids[args.devices :], args.turnover)
                finally:
                    cloud.close()
            if args.defaults:  # the same devices, every setting at its default
                cloud = Cloud(
                    f"{label}, default settings",
                    CloudProcess(
                        tmp / f"{kind}-defaults",
                        env={**defaults, **extra, "MUMU_DATABASE_URL": database_url},
                    ).start(timeout=120),
                    redis_url,
                )
                try:
                    rows += run(cloud, ids[: args.devices], no_steady, [signal.SIGTERM])
                finally:
                    cloud.close()
    if args.json:
        print(
            json.dumps(
                {"cpus": os.cpu_count(), "storms": rows, "turnover_rss_mib": memory}, indent=2
            )
        )
        return
    print(f"reconnect storms, {args.devices} devices, {os.cpu_count()} cpus")
    cols = [
        "server",
        "stop",
        "connect_s",
        "rss_mib",
        "stop_s",
        "port_closed_s",
        "readmit_s",
        "all_back_s",
        "hello_timeouts",
        "refused",
        "http_refused",
        "connect_attempts",
        "rss_mib_after",
    ]
    table(rows, cols)
    if args.steady:
        print(
            f"\nheartbeat cost ({args.steady:.0f} s window, heartbeats every {HEARTBEAT_S:.0f} s)"
        )
        cost = [r for i, r in enumerate(rows) if i == 0 or rows[i - 1]["server"] != r["server"]]
        table(
            cost,
            [
                "server",
                "cpu_ms_per_heartbeat",
                "cpu_pct_per_10k_devices",
                "redis_commands_per_heartbeat",
                "db_queries_per_heartbeat",
            ],
        )
    for label, rss in memory.items():
        print(
            f"\nRSS (MiB) of {label} after each cycle of {args.devices // 2} devices "
            f"joining and leaving: {rss}"
        )


def table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)))


if __name__ == "__main__":
    main()
