"""``LiveState`` in Redis, shared by every cloud process.

Keys (all under ``mumu:``):

- ``presence:<device>`` = "<connection id> <client address> <heard ms>", with a TTL refreshed
  by heartbeats, and ``presence-deadlines`` (device -> deadline) for the sweeper of lapsed ones;
- ``session:<id>`` = hash of the ``LiveSession`` fields, with a TTL refreshed by its parties;
- ``device-sessions:<device>`` / ``conn-sessions:<conn>`` = sets of session ids (index);
- ``slots:<group>`` = sorted set of members by deadline (e.g. the viewer sockets of an account);
- pub/sub channel ``addr:<address>`` per subscribed address.

Delivery to a device or viewer socket in this process skips Redis; otherwise (and always for
``user:`` addresses, whose sockets may be spread over processes) it publishes, and Redis's
receiver count says whether any process had a subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from cloud.batch import Batcher
from cloud.faults import is_unavailable_cause
from cloud.live import Deliver, LiveSession, LocalSubscribers, Online, Presence

log = logging.getLogger(__name__)

P = "mumu:"
_DEADLINES = f"{P}presence-deadlines"
_SESSION_FIELDS = ("session_id", "device_id", "viewer_id", "viewer_conn", "started_at")

# The scripts below touch session keys named from set members (fine on one Redis server or a
# primary with replicas; Redis Cluster would need hash tags).

# KEYS: session, device-sessions, conn-sessions; ARGV: ms, cap, session id, session key prefix,
# then the session's field/value pairs.
_ADD_SESSION = """
local cap = tonumber(ARGV[2])
if cap > 0 then
  local live = 0
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if redis.call('EXISTS', ARGV[4] .. id) == 1 then live = live + 1
    else redis.call('SREM', KEYS[2], id) end
  end
  if live >= cap then return 0 end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
if KEYS[3] ~= ARGV[4] .. 'unbound' then
  redis.call('SADD', KEYS[3], ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
end
return 1
"""
# Presence: ``presence:<device>`` = "<conn id> <address> <heard, ms>" with a TTL, and the
# sorted set ``presence-deadlines`` (device -> deadline, ms) that lets a sweeper find devices
# whose presence lapsed without anybody setting them offline.  Times are the server's clock.
_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS: presence, deadlines, device-sessions; ARGV: conn id, address, ttl ms, device id.
# Returns {the previous holder's connection id when another connection held it, or '',
# the number of session ids indexed for the device}.
_SET_ONLINE = (
    _NOW_MS
    + """
local before = redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. now,
                          'PX', ARGV[3], 'GET')
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
local previous = ''
if before then
  local held = string.match(before, '^(%S+)')
  if held ~= ARGV[1] then previous = held end
end
return {previous, redis.call('SCARD', KEYS[3])}
"""
)
# KEYS: presence, deadlines, device-sessions; ARGV: conn id, address, presence ms, device id,
# session ms, session key prefix.
_DEVICE_HEARTBEAT = (
    _NOW_MS
    + """
local was = redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. now,
                       'PX', ARGV[3], 'GET')
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('PEXPIRE', ARGV[6] .. id, ARGV[5]) == 0 then redis.call('SREM', KEYS[3], id) end
end
return was and 1 or 0
"""
)
# KEYS: presence, deadlines; ARGV: conn id, device id.  Clears presence held by that connection.
_SET_OFFLINE = """
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end
return 0
"""
# KEYS: deadlines; ARGV: limit, presence key prefix.  Claims (removes and returns) devices whose
# deadline passed and whose presence key is gone: each goes to exactly one caller.
_LAPSED = (
    _NOW_MS
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[1])
local claimed = {}
for i = 1, #due, 2 do
  local id, deadline = due[i], due[i + 1]
  if redis.call('EXISTS', ARGV[2] .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
    table.insert(claimed, id)
    table.insert(claimed, deadline)
  end
end
return claimed
"""
)
# KEYS: conn-sessions; ARGV: ms, session prefix, conn id.
_VIEWER_HEARTBEAT = """
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('HGET', ARGV[2] .. id, 'viewer_conn') == ARGV[3] then
    redis.call('PEXPIRE', ARGV[2] .. id, ARGV[1])
  else
    redis.call('SREM', KEYS[1], id)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""
# KEYS: the slot set; ARGV: ttl ms, limit, member.  Scores are deadlines on the server's clock.
_ACQUIRE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) and
   redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


class RedisLiveState:
    def __init__(self, url: str) -> None:
        self.url = url
        self._redis: Any = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._subscribers = LocalSubscribers()
        self._subscribed = asyncio.Event()
        self._scripts: dict[str, Any] = {}
        self._subscriptions: Batcher[str, None] = Batcher(self._subscribe_many)
        #: Times the pub/sub connection was re-established (and its channels resubscribed).
        self.resubscribes = 0

    @property
    def redis(self) -> Any:
        if self._redis is None:
            raise RuntimeError("RedisLiveState.open() was not called")
        return self._redis

    async def open(self) -> None:
        # A blocking pool: a burst (thousands of devices reconnecting at once) waits for a free
        # connection instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            decode_responses=True,
            health_check_interval=30,
            max_connections=64,
            timeout=20,
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        await self._redis.ping()
        self._pubsub = _CountingPubSub(
            self._redis.connection_pool,
            ignore_subscribe_messages=True,
            on_reconnect=self._resubscribed,
        )
        for name, script in (
            ("add_session", _ADD_SESSION),
            ("set_online", _SET_ONLINE),
            ("set_offline", _SET_OFFLINE),
            ("lapsed", _LAPSED),
            ("device_heartbeat", _DEVICE_HEARTBEAT),
            ("viewer_heartbeat", _VIEWER_HEARTBEAT),
            ("acquire_slot", _ACQUIRE_SLOT),
        ):
            self._scripts[name] = self._redis.register_script(script)
        self._reader = asyncio.create_task(self._read(), name="redis-pubsub-reader")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        if self._redis is not None:
            await self._redis.aclose()
        self._redis = None

    def _resubscribed(self) -> None:
        # redis-py resubscribes every channel when the pub/sub connection comes back (Redis
        # drops a subscriber whose output buffer overflows; a restart drops everyone).
        self.resubscribes += 1
        log.warning(
            "redis pub/sub connection re-established; resubscribed %d address(es)",
            len(self._subscribers.addresses()),
        )

    async def ping(self) -> None:
        await self.redis.ping()

    # presence ---------------------------------------------------------------------------------

    async def set_online(
        self, device_id: str, conn_id: str, ttl: float, address: str = ""
    ) -> Online:
        previous, sessions = await self._scripts["set_online"](
            keys=[f"{P}presence:{device_id}", _DEADLINES, f"{P}device-sessions:{device_id}"],
            args=[conn_id, address or "-", int(ttl * 1000), device_id],
        )
        # (the index may hold ids of sessions that expired: only a hint, checked by the caller)
        return Online(str(previous) or None, int(sessions) > 0)

    async def device_heartbeat(
        self, device_id: str, conn_id: str, address: str, presence_ttl: float, session_ttl: float
    ) -> bool:
        was_online = await self._scripts["device_heartbeat"](
            keys=[f"{P}presence:{device_id}", _DEADLINES, f"{P}device-sessions:{device_id}"],
            args=[
                conn_id,
                address or "-",
                int(presence_ttl * 1000),
                device_id,
                int(session_ttl * 1000),
                f"{P}session:",
            ],
        )
        return bool(was_online)

    async def set_offline(self, device_id: str, conn_id: str) -> bool:
        done = await self._scripts["set_offline"](
            keys=[f"{P}presence:{device_id}", _DEADLINES], args=[conn_id, device_id]
        )
        return bool(done)

    async def presence(self, device_ids: list[str]) -> dict[str, Presence]:
        if not device_ids:
            return {}
        held = await self.redis.mget([f"{P}presence:{d}" for d in device_ids])
        found = {}
        for device_id, value in zip(device_ids, held, strict=True):
            if value is None:
                continue
            conn_id, address, heard_ms = str(value).split(" ")
            found[device_id] = Presence(
                conn_id, "" if address == "-" else address, int(heard_ms) / 1000
            )
        return found

    async def online(self, device_ids: list[str]) -> set[str]:
        if not device_ids:
            return set()
        held = await self.redis.mget([f"{P}presence:{d}" for d in device_ids])
        return {d for d, v in zip(device_ids, held, strict=True) if v is not None}

    async def device_address(self, device_id: str) -> str | None:
        held = (await self.presence([device_id])).get(device_id)
        return None if held is None else held.address

    async def lapsed(self, ttl: float, limit: int = 500) -> list[tuple[str, float]]:
        claimed = await self._scripts["lapsed"](keys=[_DEADLINES], args=[limit, f"{P}presence:"])
        return [
            (str(claimed[i]), float(claimed[i + 1]) / 1000 - ttl) for i in range(0, len(claimed), 2)
        ]

    # sessions ---------------------------------------------------------------------------------

    async def add_session(self, session: LiveSession, ttl: float, cap: int = 0) -> bool:
        fields: list[str] = []
        for name in _SESSION_FIELDS:
            fields += [name, str(getattr(session, name))]
        added = await self._scripts["add_session"](
            keys=[
                f"{P}session:{session.session_id}",
                f"{P}device-sessions:{session.device_id}",
                f"{P}conn-sessions:{session.viewer_conn}"
                if session.viewer_conn
                else f"{P}session:unbound",
            ],
            args=[int(ttl * 1000), cap, session.session_id, f"{P}session:", *fields],
        )
        return bool(added)

    async def get_session(self, session_id: str) -> LiveSession | None:
        return _session(await self.redis.hgetall(f"{P}session:{session_id}"))

    async def remove_session(self, session_id: str) -> LiveSession | None:
        key = f"{P}session:{session_id}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(key)
            pipe.delete(key)
            fields, deleted = await pipe.execute()
        session = _session(fields)
        if not deleted or session is None:
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.srem(f"{P}device-sessions:{session.device_id}", session_id)
            pipe.srem(f"{P}conn-sessions:{session.viewer_conn}", session_id)
            await pipe.execute()
        return session

    async def rebind_viewer(self, session_id: str, viewer_conn: str, ttl: float) -> None:
        key = f"{P}session:{session_id}"
        old = await self.redis.hget(key, "viewer_conn")
        if old is None:
            return
        ms = int(ttl * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "viewer_conn", viewer_conn)
            pipe.pexpire(key, ms)
            pipe.srem(f"{P}conn-sessions:{old}", session_id)
            pipe.sadd(f"{P}conn-sessions:{viewer_conn}", session_id)
            pipe.pexpire(f"{P}conn-sessions:{viewer_conn}", ms)
            await pipe.execute()

    async def _sessions_in(self, index_key: str) -> list[LiveSession]:
        ids = sorted(await self.redis.smembers(index_key))
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.hgetall(f"{P}session:{session_id}")
            found = await pipe.execute()
        live = [s for s in map(_session, found) if s is not None]
        gone = [i for i, f in zip(ids, found, strict=True) if not f]
        if gone:
            await self.redis.srem(index_key, *gone)
        return live

    async def sessions_of_device(self, device_id: str) -> list[LiveSession]:
        return await self._sessions_in(f"{P}device-sessions:{device_id}")

    async def sessions_of_viewer_conn(self, viewer_conn: str) -> list[LiveSession]:
        sessions = await self._sessions_in(f"{P}conn-sessions:{viewer_conn}")
        return [s for s in sessions if s.viewer_conn == viewer_conn]

    async def viewer_heartbeat(self, viewer_conn: str, ttl: float) -> None:
        await self._scripts["viewer_heartbeat"](
            keys=[f"{P}conn-sessions:{viewer_conn}"],
            args=[int(ttl * 1000), f"{P}session:", viewer_conn],
        )

    async def live_session_ids(self, session_ids: list[str]) -> set[str]:
        if not session_ids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for session_id in session_ids:
                pipe.exists(f"{P}session:{session_id}")
            found = await pipe.execute()
        return {s for s, n in zip(session_ids, found, strict=True) if n}

    # slots ------------------------------------------------------------------------------------

    async def acquire_slot(self, group: str, member: str, limit: int, ttl: float) -> bool:
        taken = await self._scripts["acquire_slot"](
            keys=[f"{P}slots:{group}"], args=[int(ttl * 1000), limit, member]
        )
        return bool(taken)

    async def release_slot(self, group: str, member: str) -> None:
        await self.redis.zrem(f"{P}slots:{group}", member)

    # routing ----------------------------------------------------------------------------------

    async def subscribe(self, address: str, deliver: Deliver) -> None:
        if self._subscribers.add(address, deliver):
            # One SUBSCRIBE for every address subscribed within a turn of the event loop.
            await self._subscriptions.get(f"{P}addr:{address}")
            self._subscribed.set()

    async def _subscribe_many(self, channels: list[str]) -> dict[str, None]:
        await self._pubsub.subscribe(*channels)
        return {}

    async def unsubscribe(self, address: str, deliver: Deliver) -> None:
        if self._subscribers.remove(address, deliver):
            await self._pubsub.unsubscribe(f"{P}addr:{address}")

    async def publish(self, address: str, text: str) -> bool:
        if not address.startswith("user:") and self._subscribers.get(address):
            # A device or viewer socket lives in one process at a time (a device's stale
            # socket elsewhere is kicked on hello): if it is here, skip the round trip.
            self._subscribers.deliver(address, text)
            return True
        receivers = await self.redis.publish(f"{P}addr:{address}", text)
        return bool(receivers)

    async def _read(self) -> None:
        prefix = f"{P}addr:"
        while True:
            try:
                if not self._pubsub.subscribed:
                    self._subscribed.clear()
                    await self._subscribed.wait()
                    continue
                message = await self._pubsub.get_message(timeout=1.0)
                if message is None or message.get("type") != "message":
                    continue
                address = str(message["channel"]).removeprefix(prefix)
                # Never awaits a socket: each connection only queues the frame.
                self._subscribers.deliver(address, str(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_unavailable_cause(exc):
                    # Redis is down or restarting: expected, said in one line; the
                    # connection resubscribes when it is back.
                    log.warning("redis pub/sub unavailable (%s); retrying in 1 s", exc)
                else:
                    log.exception("redis pub/sub reader failed; retrying in 1 s")
                await asyncio.sleep(1.0)


class _CountingPubSub(PubSub):
    """redis-py's PubSub, telling us each time it reconnects (and resubscribes)."""

    def __init__(self, *args: Any, on_reconnect: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_reconnect = on_reconnect

    async def on_connect(self, connection: Any) -> None:
        # Called when the connection (re)connects; with channels held, it is a reconnection.
        if self.channels or self.patterns:
            self._on_reconnect()
        await super().on_connect(connection)


def _session(fields: dict[str, str] | None) -> LiveSession | None:
    if not fields or any(f not in fields for f in _SESSION_FIELDS):
        return None
    return LiveSession(
        session_id=fields["session_id"],
        device_id=fields["device_id"],
        viewer_id=fields["viewer_id"],
        viewer_conn=fields["viewer_conn"],
        started_at=float(fields["started_at"]),
    )
