"""Benchmark: devices held by one ``mumu-cloud serve`` and signaling relay latency.

For each backend (embedded SQLite + in-process; PostgreSQL + Redis) and, as the floor, a bare
``websockets`` relay, all in the same run:

1. a holder process connects N devices (``hello``) and keeps heartbeats flowing at the real
   30 s interval, spread evenly;
2. with them held, the server's RSS is read (psutil), and a viewer sends ``signal_ice`` to a
   device through the server at a steady rate; each frame carries its send time, so the relay
   latency (viewer -> server -> device) is measured on one clock.

3. for each cloud, the same relay measurement again while a separate process makes failed
   logins (``--logins`` a second, default 4, each from a different 127.0.0.x source address and
   for a different e-mail, so that no per-address or per-account limit stops them): every one
   costs an argon2id verification, which must not stall signaling.  For the floor, the same
   number of argon2id verifications a second in a process beside it (lowest CPU priority, as
   the cloud runs them): what that CPU- and memory-hard work costs any relay on this machine.

Prints a table (``--json`` for machine-readable output).  Targets on a 2-core machine:
10,000 devices under 1 GiB RSS, p99 relay latency under 10 ms at 1,000 messages/s, and with 4
failed logins a second still under 10 ms and within 2x of the quiet p99.

    .venv/bin/python bench/cloud_signaling.py [--devices 10000] [--rate 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cloud.auth import hash_device_token  # noqa: E402
from tests.cloud_process import CloudProcess  # noqa: E402
from tests.services import free_port, postgres_server, redis_server, wait_for_port  # noqa: E402

HEARTBEAT_S = 30.0
TOKEN = "bench-device-token"


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def seed_devices(database_url: str, n: int, owner_email: str) -> list[str]:
    """Insert N devices straight into the database (setup, not measured)."""
    from sqlalchemy import insert

    from cloud.auth import hash_password
    from cloud.schema import devices, users
    from cloud.store import SqlStore

    store = SqlStore(database_url)
    await store.open()
    ids = [uuid.uuid4().hex for _ in range(n)]
    now = time.time()
    token_hash = hash_device_token(TOKEN)
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(users).values(
                id="bench-user",
                email=owner_email,
                password_hash=hash_password("bench pass 1"),
                created_at=now,
            )
        )
        rows = [
            {
                "id": i,
                "name": "bench",
                "model": "bench",
                "token_hash": token_hash,
                "owner_id": "bench-user",
                "paired_at": now,
                "created_at": now,
            }
            for i in ids
        ]
        for start in range(0, n, 1000):
            await conn.execute(insert(devices), rows[start : start + 1000])
    await store.close()
    return ids


def hold(ws_base: str, ids: list[str], ready: Any, stop: Any, retried: Any) -> None:
    """Holder process: connect every device, then heartbeat each every 30 s until told to stop."""
    raise_fd_limit()
    connected = 0

    async def one(device_id: str, sem: asyncio.Semaphore) -> None:
        nonlocal connected
        async with sem:
            hello = {"type": "hello", "payload": {"device_id": device_id, "device_token": TOKEN}}
            while True:
                ws = await websockets.connect(
                    f"{ws_base}/ws/device", open_timeout=120, ping_interval=None
                )
                await ws.send(json.dumps(hello))
                answer = json.loads(await ws.recv())
                if answer["type"] == "hello_ack":
                    break
                # An error, then close 1013 "try again": the cloud shed load (its database
                # pool was busy for longer than MUMU_DB_POOL_TIMEOUT); an agent retries later.
                try:
                    await ws.recv()
                except websockets.ConnectionClosed as closed:
                    if closed.rcvd is None or closed.rcvd.code != 1013:
                        raise
                retried.value += 1
                await asyncio.sleep(random.uniform(0.5, 2.0))
            connected += 1
            if connected == len(ids):
                gc.collect()
                gc.freeze()  # the holder's pauses would delay heartbeats
        await asyncio.sleep(random.uniform(0, HEARTBEAT_S))
        while True:
            await ws.send('{"type":"heartbeat","payload":{}}')
            await ws.recv()
            await asyncio.sleep(HEARTBEAT_S)

    async def main() -> None:
        sem = asyncio.Semaphore(200)
        tasks = [asyncio.create_task(one(i, sem)) for i in ids]
        while connected < len(ids):
            failed = [t for t in tasks if t.done() and t.exception() is not None]
            if failed:
                raise RuntimeError(f"{len(failed)} devices failed: {failed[0].exception()!r}")
            await asyncio.sleep(0.2)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.5)
        for t in tasks:
            t.cancel()

    asyncio.run(main())


async def relay_latency(
    ws_base: str,
    viewer_hello: dict[str, Any],
    device_hello: dict[str, Any],
    device_id: str,
    rate: float,
    seconds: float,
    bare: bool,
) -> list[float]:
    device = await websockets.connect(f"{ws_base}/ws/device")
    await device.send(json.dumps(device_hello))
    await device.recv()
    viewer = await websockets.connect(f"{ws_base}/ws/viewer")
    await viewer.send(json.dumps(viewer_hello))
    await viewer.recv()
    if bare:
        sid = "bare"
    else:
        await viewer.send(
            json.dumps({"type": "watch_request", "payload": {"device_id": device_id}})
        )
        while True:
            m = json.loads(await viewer.recv())
            if m["type"] == "watch_ready":
                sid = m["payload"]["session_id"]
                break
        await device.recv()  # watch_request
    samples: list[float] = []
    total = int(rate * seconds)
    # The probe's own collector must not add pauses to what it measures.
    gc.collect()
    gc.freeze()
    gc.disable()

    async def receive() -> None:
        while len(samples) < total:
            m = json.loads(await device.recv())
            if m["type"] == "signal_ice":
                sent = float(m["payload"]["candidate"]["candidate"].split()[-1])
                samples.append(time.perf_counter() - sent)

    receiver = asyncio.create_task(receive())
    start = time.perf_counter()
    for n in range(total):
        target = start + n / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        candidate = {
            "candidate": f"candidate:1 1 udp 1 127.0.0.1 9 typ host t {time.perf_counter()}"
        }
        await viewer.send(
            json.dumps(
                {"type": "signal_ice", "payload": {"session_id": sid, "candidate": candidate}}
            )
        )
    await asyncio.wait_for(receiver, 30)
    gc.enable()
    gc.unfreeze()
    await viewer.close()
    await device.close()
    return samples


def fail_logins(base_url: str, per_s: float, stop: Any, outcomes: Any) -> None:
    """Attacker process: ``per_s`` failed logins a second, each from its own source address."""

    async def one(n: int) -> tuple[int, float]:
        address = f"127.0.0.{2 + n % 250}"
        transport = httpx.AsyncHTTPTransport(local_address=address)
        async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=60) as h:
            started = time.perf_counter()
            r = await h.post(
                "/api/auth/login",
                json={"email": f"nobody-{n}@example.com", "password": "not the password"},
            )
            return r.status_code, time.perf_counter() - started

    async def main() -> None:
        tasks = []
        start = time.perf_counter()
        n = 0
        while not stop.is_set():
            delay = start + n / per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(min(delay, 0.2))
                continue
            tasks.append(asyncio.create_task(one(n)))
            n += 1
        for status, seconds in await asyncio.gather(*tasks):
            outcomes.put((status, seconds))
        outcomes.put(None)

    asyncio.run(main())


def verify_beside(per_s: float, stop: Any) -> None:
    """The floor's neighbour: ``per_s`` argon2id verifications a second (the cloud's parameters),
    at the lowest CPU priority as the cloud's password workers run them, in a process of its own:
    what the same password work costs the machine, with no login handling at all."""
    from cloud import auth
    from cloud.passwords import lowest_priority

    lowest_priority()
    known = auth.hash_password("the right password")
    start = time.perf_counter()
    n = 0
    while not stop.is_set():
        delay = start + n / per_s - time.perf_counter()
        if delay > 0:
            stop.wait(min(delay, 0.2))
            continue
        auth.verify_password(known, "not the password")
        n += 1


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(
    label: str,
    ws_base: str,
    server_pid: int,
    ids: list[str],
    args: argparse.Namespace,
    viewer_hello: dict[str, Any],
    bare: bool,
) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    retried = ctx.Value("i", 0)
    holder = ctx.Process(target=hold, args=(ws_base, ids[1:], ready, stop, retried), daemon=True)
    t0 = time.monotonic()
    holder.start()
    deadline = time.monotonic() + 600
    while not ready.wait(0.5):
        if not holder.is_alive():
            raise RuntimeError(f"{label}: the device holder failed (see above)")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label}: devices did not connect in time")
    connect_s = time.monotonic() - t0
    time.sleep(2)
    server = psutil.Process(server_pid)
    rss = [server.memory_info().rss]
    cpu0 = server.cpu_times()
    device_hello = {"type": "hello", "payload": {"device_id": ids[0], "device_token": TOKEN}}

    def relay_runs() -> list[list[float]]:
        runs = []
        for _ in range(args.repeats):
            samples = asyncio.run(
                relay_latency(
                    ws_base, viewer_hello, device_hello, ids[0], args.rate, args.seconds, bare
                )
            )
            runs.append([s * 1000 for s in samples])
            rss.append(server.memory_info().rss)
        return runs

    quiet = relay_runs()
    cpu1 = server.cpu_times()
    rows = [row(label, ids, connect_s, rss, quiet, cpu0, cpu1, args)]
    rows[0]["hellos_retried"] = retried.value
    if args.logins > 0:
        # The same measurement under password work: for a cloud, an attacker failing logins
        # from many addresses; for the floor, the same argon2 work in a process beside it.
        stop_load = ctx.Event()
        outcomes = ctx.Queue()
        if bare:
            suffix = f" + {args.logins:g} argon2 verifications/s beside it"
            load = ctx.Process(target=verify_beside, args=(args.logins, stop_load), daemon=True)
        else:
            suffix = f" + {args.logins:g} failed logins/s"
            base_url = ws_base.replace("ws://", "http://")
            load = ctx.Process(
                target=fail_logins, args=(base_url, args.logins, stop_load, outcomes), daemon=True
            )
        load.start()
        time.sleep(2)  # the load is under way
        cpu2 = server.cpu_times()
        loaded = relay_runs()
        cpu3 = server.cpu_times()
        stop_load.set()
        answers = []
        if not bare:
            while (item := outcomes.get(timeout=120)) is not None:
                answers.append(item)
        load.join(30)
        loaded_row = row(label + suffix, ids, connect_s, rss, loaded, cpu2, cpu3, args)
        loaded_row["p99_vs_quiet"] = round(
            loaded_row["relay_p99_ms"] / max(rows[0]["relay_p99_ms"], 0.01), 2
        )
        if answers:
            statuses: dict[str, int] = {}
            for status, _ in answers:
                statuses[str(status)] = statuses.get(str(status), 0) + 1
            loaded_row["login_answers"] = statuses
            loaded_row["login_p50_ms"] = round(
                statistics.median(seconds for _, seconds in answers) * 1000, 1
            )
        rows.append(loaded_row)
    stop.set()
    holder.join(30)
    if holder.is_alive():
        holder.kill()
    return rows


def row(
    label: str,
    ids: list[str],
    connect_s: float,
    rss: list[int],
    runs: list[list[float]],
    cpu0: Any,
    cpu1: Any,
    args: argparse.Namespace,
) -> dict[str, Any]:
    def median_of(p: float) -> float:
        return round(statistics.median(percentile(ms, p) for ms in runs), 2)

    return {
        "server": label,
        "devices": len(ids) - 1,
        "connect_s": round(connect_s, 1),
        "rss_mib": round(max(rss) / 2**20, 1),
        "relay_p50_ms": median_of(50),
        "relay_p95_ms": median_of(95),
        "relay_p99_ms": median_of(99),
        "relay_p99_each_run_ms": [round(percentile(ms, 99), 2) for ms in runs],
        "messages": sum(len(ms) for ms in runs),
        "server_cpu_pct_during_relay": round(
            100
            * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system))
            / (args.seconds * args.repeats),
            1,
        ),
        "login_answers": "",
        "login_p50_ms": "",
        "p99_vs_quiet": "",
        "hellos_retried": "",
    }


def run_cloud(
    label: str, env: dict[str, str], database_url: str, args: argparse.Namespace, tmp: Path
) -> list[dict[str, Any]]:
    ids = asyncio.run(seed_devices(database_url, args.devices + 1, "bench@example.com"))
    env = {
        **env,
        "MUMU_DATABASE_URL": database_url,
        "MUMU_JWT_SECRET": "bench-secret-" + "x" * 40,
        "MUMU_LOGIN_RATE": "1000/minute",
        # One viewer socket stands in for many at --rate messages a second: the per-socket
        # budget (50/s by default) would drop nearly all of them.
        "MUMU_WS_MESSAGE_RATE": "100000",
        "MUMU_WS_MESSAGE_BURST": "100000",
    }
    with CloudProcess(tmp / label, env=env) as cloud:
        token = httpx.post(
            f"{cloud.url}/api/auth/login",
            json={"email": "bench@example.com", "password": "bench pass 1"},
            timeout=90,  # argon2 runs at the lowest CPU priority: slow on a busy machine
        ).json()
        viewer_hello = {"type": "hello", "payload": {"token": token["access_token"]}}
        assert cloud.proc is not None
        return measure(label, cloud.ws_url, cloud.proc.pid, ids, args, viewer_hello, bare=False)


def run_bare(args: argparse.Namespace) -> list[dict[str, Any]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench/bare_relay.py"), str(port)])
    try:
        wait_for_port(port, proc=proc)
        ids = [uuid.uuid4().hex for _ in range(args.devices + 1)]
        viewer_hello = {"type": "hello", "payload": {"token": "viewer"}}
        return measure(
            "bare websockets relay (floor)",
            f"ws://127.0.0.1:{port}",
            proc.pid,
            ids,
            args,
            viewer_hello,
            bare=True,
        )
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="relay messages per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="relay measurement length")
    parser.add_argument(
        "--repeats", type=int, default=3, help="relay measurements per server (medians reported)"
    )
    parser.add_argument(
        "--logins",
        type=float,
        default=4.0,
        help="failed logins per second, each from its own address, in the loaded row (0: none)",
    )
    parser.add_argument("--only", choices=["embedded", "scaled", "bare"], action="append")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    raise_fd_limit()
    which = args.only or ["bare", "embedded", "scaled"]
    results = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if "bare" in which:
            results.extend(run_bare(args))
        if "embedded" in which:
            results.extend(
                run_cloud("mumu-cloud SQLite + in-process", {}, f"sqlite:///{tmp}/b.db", args, tmp)
            )
        if "scaled" in which:
            pg = stack.enter_context(postgres_server())
            redis_url = stack.enter_context(redis_server(tmp / "redis"))
            results.extend(
                run_cloud(
                    "mumu-cloud PostgreSQL + Redis", {"MUMU_REDIS_URL": redis_url}, pg, args, tmp
                )
            )
    meta = {
        "cpus": os.cpu_count(),
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "failed_logins_per_s": args.logins,
    }
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
        return
    cols = [
        "server",
        "devices",
        "connect_s",
        "hellos_retried",
        "rss_mib",
        "relay_p50_ms",
        "relay_p95_ms",
        "relay_p99_ms",
        "relay_p99_each_run_ms",
        "messages",
        "server_cpu_pct_during_relay",
        "p99_vs_quiet",
        "login_answers",
        "login_p50_ms",
    ]
    widths = [max(len(c), *(len(str(r[c])) for r in results)) for c in cols]
    print(
        f"signaling relay at {args.rate:.0f} msg/s, {args.repeats} x {args.seconds:.0f} s "
        "(percentiles: median over the repeats), "
        f"{args.devices} devices heartbeating every {HEARTBEAT_S:.0f} s, {os.cpu_count()} cpus"
    )
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in results:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))


if __name__ == "__main__":
    main()
