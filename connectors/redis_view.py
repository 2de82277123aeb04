"""The Redis read model: a view of every customer's current segments, kept from `segment-changes`.

`RedisView` turns one change into Redis writes (one Lua script per change, so a customer's keys
never disagree and the `seq` check is atomic with the writes); `ViewConsumer` is the Kafka
loop (consumer group, offsets committed only after Redis acknowledged); `rebuild_view` wipes the
prefix and replays the topic from the beginning. The key layout is documented in docs/redis.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from connectors.changes import ChangeRecord, Tombstone, decode_record
from connectors.common import Backoff, sleep_or_stop, topic_partitions
from model.errors import ChangeRecordError
from model.events import parse_rfc3339
from streams.runtime.metrics import Metrics
from streams.runtime.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "segmenter:"
LAYOUT_VERSION = "1"
# after a Redis restart, the changes of the last minute are read again (its append-only file is
# fsynced every second: what it may have missed is in there)
REPLAY_AFTER_RESTART_MS = 60_000
DEFAULT_FEED_MAX = 1000
DEFAULT_HISTORY_MAX = 50
DEFAULT_STATS_TTL = 2 * 86_400  # seconds
# size history per segment: per minute for 48 h, per hour for 400 days (seconds kept)
DEFAULT_SIZES_MINUTE_KEEP = 48 * 3600
DEFAULT_SIZES_HOUR_KEEP = 400 * 86_400
SIZE_RESOLUTIONS = {"minute": 60, "hour": 3600}
META_KEYS = ("label", "color", "icon", "actions")

APPLIED, STALE, ERASED, INVALID = "applied", "stale", "erased", "invalid"
_OUTCOMES = {0: STALE, 1: APPLIED, 2: ERASED}

# KEYS: customer hash, history list, feed list, sizes hash, stats hash (of the change's minute).
# ARGV: 1 prefix, 2 customer id, 3 seq, 4 mode (change|erase|tombstone), 5 rules_version,
#   6 updated_at,
#   7 segments JSON, 8 feed entry, 9 history entry, 10 feed max, 11 history max, 12 stats TTL
#   (0: no stats), then counted sections: segments; (segment, s|n, metadata JSON) triples;
#   (group, member or '') pairs; entered; exited; (entered segment, why JSON) pairs; then
#   the change's `at` in epoch seconds (0: unknown) and how many seconds of size history to keep
#   per minute and per hour (0: none).
APPLY_LUA = r"""
local ckey, hkey, fkey, skey, statkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, cid, seq, mode = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local stored = redis.call('HGET', ckey, 'seq')
if mode == 'tombstone' then
  -- erased (the erasure's change came before it, or compaction removed that): forget the
  -- customer whatever its seq; nothing to do when the view does not have it
  if not stored then return 0 end
elseif stored and tonumber(stored) >= seq then
  return 0
end

local i = 13
local function section(width)
  local n = tonumber(ARGV[i])
  local out = {}
  for j = 0, n - 1 do
    local row = {}
    for k = 1, width do row[k] = ARGV[i + j * width + k] end
    out[#out + 1] = row
  end
  i = i + 1 + n * width
  return out
end
local segs, metas, groups = section(1), section(3), section(2)
local entered, exited = section(1), section(1)
local whys = section(2)
local at_s = tonumber(ARGV[i])
local series = {{'minute', 60, tonumber(ARGV[i + 1])}, {'hour', 3600, tonumber(ARGV[i + 2])}}
-- pipelines (rules/pipelines.py): after the series, the customer's new pipeline ('' none said,
-- '-' none any more) and the default one for a customer the view has none for ('' unknown)
local pipe_to, pipe_default = ARGV[i + 3] or '', ARGV[i + 4] or ''
local pkey = prefix .. 'pipelines:sizes'
local function pipeline_leave()
  local cur = redis.call('HGET', ckey, 'pipeline')
  if cur then redis.call('HINCRBY', pkey, cur, -1) end
end

local old = {}
local oldraw = redis.call('HGET', ckey, 'segments')
if oldraw then
  for _, s in ipairs(cjson.decode(oldraw)) do old[s] = true end
end
local function members(s) return prefix .. 'segment:' .. s .. ':members' end
-- the segment's size series (sorted sets, score = bucket start, member = 'bucket:size'): the
-- size after the last change of each bucket; a bucket never goes back in time (the newest
-- one is reused), so the newest point always equals the size; one point at or before the
-- kept window stays as the baseline
local function record(s, size)
  for _, r in ipairs(series) do
    if r[3] > 0 then
      local key = prefix .. 'segment:' .. s .. ':sizes:' .. r[1]
      local bucket = at_s - at_s % r[2]
      local last = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
      if last[2] and tonumber(last[2]) > bucket then bucket = tonumber(last[2]) end
      if bucket > 0 then
        redis.call('ZREMRANGEBYSCORE', key, bucket, bucket)
        redis.call('ZADD', key, bucket, bucket .. ':' .. size)
        local base = redis.call('ZREVRANGEBYSCORE', key, bucket - r[3], '-inf', 'WITHSCORES',
                                'LIMIT', 0, 1)
        if base[2] then redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. base[2]) end
      end
    end
  end
end
local function leave(s)
  if redis.call('SREM', members(s), cid) == 1 then
    record(s, redis.call('HINCRBY', skey, s, -1))
  end
end
local function join(s)
  if redis.call('SADD', members(s), cid) == 1 then
    record(s, redis.call('HINCRBY', skey, s, 1))
  end
end
local ttl = tonumber(ARGV[12])
local function count(list, what)
  if ttl > 0 and #list > 0 then
    for _, row in ipairs(list) do redis.call('HINCRBY', statkey, row[1] .. ':' .. what, 1) end
    redis.call('EXPIRE', statkey, ttl)
  end
end

if mode == 'erase' or mode == 'tombstone' then
  for _, row in ipairs(exited) do old[row[1]] = true end
  for s in pairs(old) do leave(s) end
  for _, f in ipairs(redis.call('HKEYS', ckey)) do
    if string.sub(f, 1, 6) == 'group:' then
      redis.call('HDEL', prefix .. 'group:' .. string.sub(f, 7), cid)
    end
  end
  for _, row in ipairs(groups) do redis.call('HDEL', prefix .. 'group:' .. row[1], cid) end
  pipeline_leave()
  redis.call('DEL', ckey, hkey)
  for _, e in ipairs(redis.call('LRANGE', fkey, 0, -1)) do
    local ok, obj = pcall(cjson.decode, e)
    if ok and type(obj) == 'table' and obj['customer_id'] == cid then
      redis.call('LREM', fkey, 0, e)
    end
  end
  count(exited, 'exited')
  return 2
end

local new = {}
for _, row in ipairs(segs) do new[row[1]] = true end
local left = {}
local any_left = false
for s in pairs(old) do
  if not new[s] then
    leave(s)
    redis.call('HDEL', ckey, 'seg:' .. s, 'entered:' .. s, 'why:' .. s)
    left[s] = true
    any_left = true
  end
end
for _, row in ipairs(segs) do join(row[1]) end
for _, m in ipairs(metas) do
  if m[2] == 's' then
    redis.call('HSET', ckey, 'seg:' .. m[1], m[3])
  else
    redis.call('HSETNX', ckey, 'seg:' .. m[1], m[3])
  end
end
for _, w in ipairs(whys) do
  redis.call('HSET', ckey, 'entered:' .. w[1], ARGV[6], 'why:' .. w[1], w[2])
end
local moved = {}
for _, g in ipairs(groups) do
  local gk = prefix .. 'group:' .. g[1]
  moved[g[1]] = true
  if g[2] == '' then
    redis.call('HDEL', gk, cid)
    redis.call('HDEL', ckey, 'group:' .. g[1])
  else
    redis.call('HSET', gk, cid, g[2])
    redis.call('HSET', ckey, 'group:' .. g[1], g[2])
  end
end
if any_left then  -- a group member that left without a group move (e.g. a deleted segment)
  local flat = redis.call('HGETALL', ckey)
  for j = 1, #flat, 2 do
    local f, v = flat[j], flat[j + 1]
    if string.sub(f, 1, 6) == 'group:' and left[v] and not moved[string.sub(f, 7)] then
      redis.call('HDEL', prefix .. 'group:' .. string.sub(f, 7), cid)
      redis.call('HDEL', ckey, f)
    end
  end
end
local pipe_cur = redis.call('HGET', ckey, 'pipeline')
if pipe_to == '' and not pipe_cur then pipe_to = pipe_default end
if pipe_to == '-' then
  pipeline_leave()
  redis.call('HDEL', ckey, 'pipeline')
elseif pipe_to ~= '' and pipe_to ~= pipe_cur then
  pipeline_leave()
  redis.call('HSET', ckey, 'pipeline', pipe_to)
  redis.call('HINCRBY', pkey, pipe_to, 1)
end
redis.call('HSET', ckey, 'seq', ARGV[3], 'rules_version', ARGV[5], 'updated_at', ARGV[6],
           'segments', ARGV[7])
count(entered, 'entered')
count(exited, 'exited')
local feed_max, history_max = tonumber(ARGV[10]), tonumber(ARGV[11])
if feed_max > 0 then
  redis.call('LPUSH', fkey, ARGV[8])
  redis.call('LTRIM', fkey, 0, feed_max - 1)
end
if history_max > 0 then
  redis.call('LPUSH', hkey, ARGV[9])
  redis.call('LTRIM', hkey, 0, history_max - 1)
end
return 1
"""


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Names of the view's keys (see docs/redis.md). Ids are used verbatim."""

    prefix: str = DEFAULT_PREFIX

    def customer(self, customer_id: str) -> str:
        return f"{self.prefix}customer:{customer_id}"

    def members(self, segment: str) -> str:
        return f"{self.prefix}segment:{segment}:members"

    def group(self, group: str) -> str:
        return f"{self.prefix}group:{group}"

    def size_series(self, segment: str, resolution: str) -> str:
        """The segment's size history, `resolution` = minute | hour."""
        return f"{self.prefix}segment:{segment}:sizes:{resolution}"

    def history(self, customer_id: str) -> str:
        return f"{self.prefix}history:{customer_id}"

    def stats(self, minute: str) -> str:
        """Counters of one UTC minute, `minute` = yyyymmddHHMM."""
        return f"{self.prefix}stats:{minute}"

    @property
    def sizes(self) -> str:
        return f"{self.prefix}segments:sizes"

    @property
    def pipeline_sizes(self) -> str:
        """Pipeline -> number of the view's customers in it."""
        return f"{self.prefix}pipelines:sizes"

    @property
    def feed(self) -> str:
        return f"{self.prefix}feed"

    @property
    def meta(self) -> str:
        return f"{self.prefix}meta"

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key under the prefix (glob characters escaped)."""
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix)
        return escaped + "*"


def minute_of(ms: int) -> str:
    """yyyymmddHHMM of an epoch-ms instant (UTC)."""
    return time.strftime("%Y%m%d%H%M", time.gmtime(ms // 1000))


def segment_metadata(segment: Mapping[str, Any]) -> dict[str, Any]:
    """The display metadata kept per held segment: label, color, icon, actions."""
    return {k: segment.get(k) for k in META_KEYS}


def rule_file_metadata(rule_file: Any) -> dict[str, dict[str, Any]]:
    """Segment id -> metadata from a loaded rule file (rules.model.RuleFile)."""
    return {s.id: {"label": s.label, "color": s.color, "icon": s.icon,
                   "actions": dict(s.actions)} for s in rule_file.segments}


def rule_file_groups(rule_file: Any) -> dict[str, str]:
    """Segment id -> group from a loaded rule file (segments without a group are left out)."""
    return {s.id: s.group for s in rule_file.segments if s.group is not None}


@dataclass(frozen=True, slots=True)
class CustomerView:
    """One customer as the view holds it."""

    customer_id: str
    seq: int
    rules_version: str
    updated_at: str
    segments: dict[str, dict[str, Any]]  # held segment -> metadata (label, color, icon, actions)
    groups: dict[str, str]  # group -> current member
    pipeline: str | None = None  # current pipeline (rule files with `pipelines:`)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class RedisView:
    """Applies segment changes to Redis. Idempotent and ordered by `seq` per customer."""

    # the rule file's default pipeline (`--rules`): a customer whose changes never moved their
    # pipeline is counted in it; None: only moves set a customer's pipeline
    default_pipeline: str | None = None

    def _pipeline_args(self, change: ChangeRecord) -> list[str]:
        move = change.pipeline
        to = move.get("to") if move is not None else None
        if move is None:
            to = ""
        elif to is None:
            to = "-"
        return [str(to), self.default_pipeline or ""]

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        feed_max: int = DEFAULT_FEED_MAX,
        history_max: int = DEFAULT_HISTORY_MAX,
        stats_ttl: int = DEFAULT_STATS_TTL,
        sizes_minute_keep: int = DEFAULT_SIZES_MINUTE_KEEP,
        sizes_hour_keep: int = DEFAULT_SIZES_HOUR_KEEP,
        fallback_metadata: Mapping[str, Mapping[str, Any]] | None = None,
        segment_groups: Mapping[str, str] | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if feed_max < 0 or history_max < 0 or stats_ttl < 0:
            raise ValueError("feed_max, history_max and stats_ttl must be >= 0")
        self.client = client
        self.keys = KeyLayout(prefix)
        self.feed_max = feed_max
        self.history_max = history_max
        self.stats_ttl = stats_ttl
        self.sizes_keep = (max(0, sizes_minute_keep), max(0, sizes_hour_keep))
        self.fallback = {k: orjson.dumps(segment_metadata(v))
                         for k, v in (fallback_metadata or {}).items()}
        self.segment_groups = dict(segment_groups or {})
        self.metrics = metrics
        self._clock = clock
        self._script = client.register_script(APPLY_LUA)

    # ------------------------------------------------------------------ writing
    def _tombstone_call(self, cid: str) -> tuple[list[str], list[Any]]:
        k = self.keys
        # no stats, and empty sections (segments, metadata, groups, entered, exited, whys):
        # the script erases what the customer's hash lists; time unknown (0: the size
        # history's newest points are updated)
        args: list[Any] = [k.prefix, cid, 0, "tombstone", "", "", b"[]", b"", b"",
                           self.feed_max, self.history_max, 0, 0, 0, 0, 0, 0, 0,
                           0, *self.sizes_keep]
        return [k.customer(cid), k.history(cid), k.feed, k.sizes, k.stats("0")], args

    def _call(self, change: ChangeRecord | Tombstone) -> tuple[list[str], list[Any]]:
        if type(change) is Tombstone:
            return self._tombstone_call(change.customer_id)
        assert isinstance(change, ChangeRecord)
        k = self.keys
        at_ms = parse_rfc3339(change.at)
        stats_ttl = self.stats_ttl
        minute = "0"
        if at_ms is None or at_ms < (self._clock() - stats_ttl) * 1000:
            stats_ttl = 0  # replayed history older than the counters live: do not count it
        else:
            minute = minute_of(at_ms)
        cause = change.wire.get("cause")
        feed: dict[str, Any] = {
            "customer_id": change.customer_id, "seq": change.seq, "at": change.at,
            "cause": cause, "entered": list(change.entered), "exited": list(change.exited)}
        move = change.pipeline
        if move is not None:  # rule files with `pipelines:`: the dashboard's pipeline moves
            feed["pipeline"] = {"from": move.get("from"), "to": move.get("to")}
        feed_entry = orjson.dumps(feed)
        history_entry = orjson.dumps({
            "seq": change.seq, "at": change.at, "cause": cause, "rules_version":
            change.rules_version, "entered": list(change.entered), "exited": list(change.exited),
            "segments": list(change.segments)})
        args: list[Any] = [
            k.prefix, change.customer_id, change.seq, "erase" if change.is_erasure else "change",
            change.rules_version, change.at, orjson.dumps(list(change.segments)), feed_entry,
            history_entry, self.feed_max, self.history_max, stats_ttl,
        ]
        args.append(len(change.segments))
        args.extend(change.segments)
        metas: list[tuple[str, str, bytes]] = []
        for seg in change.segments:
            detail = change.details.get(seg)
            if detail is not None:
                metas.append((seg, "s", orjson.dumps(segment_metadata(detail))))
            else:
                metas.append((seg, "n", self.fallback.get(seg, b"{}")))
        args.append(len(metas))
        for meta_row in metas:
            args.extend(meta_row)
        groups = [(name, move.get("to") or "") for name, move in change.groups.items()]
        if self.segment_groups:  # the group of a held segment that did not move now
            moved = set(change.groups)
            for seg in change.segments:
                group = self.segment_groups.get(seg)
                if group is not None and group not in moved:
                    groups.append((group, seg))
                    moved.add(group)
        args.append(len(groups))
        for group_row in groups:
            args.extend(group_row)
        args.append(len(change.entered))
        args.extend(change.entered)
        args.append(len(change.exited))
        args.extend(change.exited)
        held = set(change.segments)
        whys = [(seg, orjson.dumps((change.details.get(seg) or {}).get("why") or {}))
                for seg in change.entered if seg in held]
        args.append(len(whys))
        for why_row in whys:
            args.extend(why_row)
        args.extend([(at_ms or 0) // 1000, *self.sizes_keep])
        args.extend(self._pipeline_args(change))
        keys = [k.customer(change.customer_id), k.history(change.customer_id), k.feed, k.sizes,
                k.stats(minute)]
        return keys, args

    async def apply(self, change: ChangeRecord | Tombstone) -> str:
        """Apply one change: 'applied', 'stale' (seq not newer: nothing written) or 'erased'.
        A tombstone erases the customer ('erased'), or is 'stale' when the view does not have
        the customer (already erased, or never seen)."""
        [outcome] = await self.apply_many([change])
        return outcome

    async def apply_many(self, changes: Sequence[ChangeRecord | Tombstone]) -> list[str]:
        """Apply changes in order, in one round trip (each change is atomic on its own).
        Raises RedisError when Redis fails; applying the same changes again is safe."""
        if not changes:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for change in changes:
                keys, args = self._call(change)
                await self._script(keys=keys, args=args, client=pipe)
            results = await pipe.execute()
        outcomes = [_OUTCOMES[int(r)] for r in results]
        if self.metrics is not None:
            for outcome, n in Counter(outcomes).items():
                self.metrics.redis_writes.labels(outcome).inc(n)
        return outcomes

    async def mark_layout(self) -> None:
        """Write the meta key: the layout, and (once) an epoch marker that lives as long as
        the view's data does."""
        await self.client.hset(self.keys.meta, mapping={"layout": LAYOUT_VERSION,
                                                        "prefix": self.keys.prefix})
        await self.client.hsetnx(self.keys.meta, "epoch", uuid.uuid4().hex)

    async def identity(self) -> tuple[str | None, str]:
        """(the epoch marker, the Redis server's run id): the marker gone means the view's data
        is gone; another run id means Redis restarted (its append-only file may miss the last
        second of writes)."""
        epoch = await self.client.hget(self.keys.meta, "epoch")
        info = await self.client.info("server")
        return (None if epoch is None else _text(epoch)), str(info.get("run_id", ""))

    async def wipe(self) -> int:
        """Delete every key under the prefix; returns how many."""
        deleted = 0
        batch: list[bytes | str] = []
        async for key in self.client.scan_iter(match=self.keys.pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await self.client.unlink(*batch)
                batch = []
        if batch:
            deleted += await self.client.unlink(*batch)
        return deleted

    # ------------------------------------------------------------------ reading
    async def customer(self, customer_id: str) -> CustomerView | None:
        raw = await self.client.hgetall(self.keys.customer(customer_id))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        held = orjson.loads(fields.get("segments", "[]"))
        return CustomerView(
            customer_id=customer_id,
            seq=int(fields.get("seq", "0")),
            rules_version=fields.get("rules_version", ""),
            updated_at=fields.get("updated_at", ""),
            segments={s: orjson.loads(fields.get(f"seg:{s}", "{}")) for s in held},
            groups={f[6:]: v for f, v in fields.items() if f.startswith("group:")},
            pipeline=fields.get("pipeline") or self.default_pipeline,
        )

    async def members(self, segment: str) -> set[str]:
        return {_text(m) for m in await self.client.smembers(self.keys.members(segment))}

    async def pipeline_sizes(self) -> dict[str, int]:
        """Pipeline -> customers of the view in it (rule files with `pipelines:`)."""
        raw = await self.client.hgetall(self.keys.pipeline_sizes)
        return {_text(k): int(v) for k, v in raw.items()}

    async def sizes(self) -> dict[str, int]:
        raw = await self.client.hgetall(self.keys.sizes)
        return {_text(k): int(v) for k, v in raw.items()}

    async def group_members(self, group: str) -> dict[str, str]:
        raw = await self.client.hgetall(self.keys.group(group))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def feed(self, count: int = 100) -> list[dict[str, Any]]:
        return [orjson.loads(e) for e in await self.client.lrange(self.keys.feed, 0, count - 1)]

    async def history(self, customer_id: str, count: int = 50) -> list[dict[str, Any]]:
        key = self.keys.history(customer_id)
        return [orjson.loads(e) for e in await self.client.lrange(key, 0, count - 1)]

    async def stats(self, minute: str) -> dict[str, int]:
        raw = await self.client.hgetall(self.keys.stats(minute))
        return {_text(k): int(v) for k, v in raw.items()}


# ---------------------------------------------------------------------- applying with retries


async def apply_with_retry(
    view: RedisView,
    changes: Sequence[ChangeRecord | Tombstone],
    *,
    stop: asyncio.Event | None = None,
    backoff: Backoff | None = None,
    metrics: Metrics | None = None,
) -> list[str] | None:
    """Apply `changes`, retrying with backoff while Redis fails (restarting, unreachable, busy
    loading...). Returns the outcomes, or None if `stop` was set before Redis took them."""
    backoff = backoff or Backoff(0.1, 10.0)
    while True:
        try:
            outcomes = await view.apply_many(changes)
        except (RedisError, OSError) as exc:
            if metrics is not None:
                metrics.redis_write_errors.inc()
            delay = backoff.next_delay()
            log.warning("redis write failed (%s: %s); retry %d in %.2f s",
                        type(exc).__name__, exc, backoff.attempt, delay)
            if await sleep_or_stop(stop, delay):
                return None
            continue
        if backoff.attempt:
            log.info("redis writes succeed again after %d retries", backoff.attempt)
        backoff.reset()
        return outcomes


def decode_records(records: Iterable[Any], metrics: Metrics | None = None
                   ) -> list[ChangeRecord | Tombstone]:
    """Decode Kafka records (key, value, topic, partition, offset) into changes and tombstones
    (null values: erased customers), logging and counting (outcome 'invalid') the ones that
    cannot be used."""
    out: list[ChangeRecord | Tombstone] = []
    for msg in records:
        try:
            out.append(decode_record(msg.value, msg.key))
        except ChangeRecordError as exc:
            log.error("skipping invalid segment change at %s[%d]@%d: %s",
                      msg.topic, msg.partition, msg.offset, exc)
            if metrics is not None:
                metrics.redis_writes.labels(INVALID).inc()
    return out


# ---------------------------------------------------------------------- the Kafka loop


@dataclass
class ViewConsumer:
    """Keeps a RedisView up to date from the changes topic, as a member of a consumer group.

    Offsets are committed only after Redis acknowledged every change before them: a change is
    never lost, and one applied twice is stale the second time."""

    settings: Settings
    view: RedisView
    topic: str
    group_id: str
    metrics: Metrics | None = None
    batch_size: int = 500
    check_every: float = 2.0  # seconds between checks that Redis still has the view
    backoff: Backoff = field(default_factory=lambda: Backoff(0.1, 10.0))
    counts: Counter[str] = field(default_factory=Counter)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_interval_ms=600_000,
        )
        await consumer.start()
        try:
            try:
                await self.view.mark_layout()
            except (RedisError, OSError) as exc:  # informational only; writes retry below
                log.warning("cannot write the view's meta key yet: %s", exc)
            identity = await self._identity()
            checked = time.monotonic()
            if ready is not None:
                ready.set()
            while not stop.is_set():
                if time.monotonic() - checked >= self.check_every:
                    identity = await self._check(consumer, identity)
                    checked = time.monotonic()
                batch = await consumer.getmany(timeout_ms=500, max_records=self.batch_size)
                if not batch:
                    continue
                offsets: dict[TopicPartition, int] = {}
                for tp, messages in batch.items():
                    changes = decode_records(messages, self.metrics)
                    if len(changes) < len(messages):
                        self.counts[INVALID] += len(messages) - len(changes)
                    outcomes = await apply_with_retry(self.view, changes, stop=stop,
                                                      backoff=self.backoff, metrics=self.metrics)
                    if outcomes is None:
                        break  # stopping: what Redis did not take stays uncommitted
                    self.counts.update(outcomes)
                    offsets[tp] = messages[-1].offset + 1
                if offsets:
                    try:
                        await consumer.commit(offsets)
                    except KafkaError as exc:  # rebalanced meanwhile: the new owner re-applies
                        log.warning("offset commit failed (%s); the changes will be re-read "
                                    "and found stale", exc)
        finally:
            await consumer.stop()

    async def _identity(self) -> tuple[str | None, str] | None:
        try:
            return await self.view.identity()
        except (RedisError, OSError):
            return None  # Redis not answering: checked again later

    async def _check(self, consumer: AIOKafkaConsumer,
                     known: tuple[str | None, str] | None) -> tuple[str | None, str] | None:
        """Redis lost the view's data (the epoch marker is gone) or restarted (its append-only
        file keeps all but the last second): read the changes again, all of them or the last
        minute's, from Kafka; what the view already has is stale and skipped by `seq`."""
        now = await self._identity()
        if now is None or known is None or now == known:
            return now if known is None else known
        assignment = list(consumer.assignment())
        if now[0] is None or now[0] != known[0]:
            log.warning("the Redis view's data is gone (epoch marker missing): rebuilding it "
                        "from %s", self.topic)
            await self.view.mark_layout()
            if assignment:
                await consumer.seek_to_beginning(*assignment)
            self.counts["rebuilt"] += 1
        else:
            log.warning("Redis restarted (run id changed): reading the last minute of %s "
                        "again in case its append-only file missed writes", self.topic)
            since = int(time.time() * 1000) - REPLAY_AFTER_RESTART_MS
            found = await consumer.offsets_for_times(dict.fromkeys(assignment, since))
            for tp, at in found.items():
                if at is not None:
                    consumer.seek(tp, min(at.offset, await consumer.position(tp)))
            self.counts["replayed"] += 1
        return await self._identity()


# ---------------------------------------------------------------------- rebuild


@dataclass
class RebuildSummary:
    records: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    deleted_keys: int = 0
    seconds: float = 0.0
    sizes: dict[str, int] = field(default_factory=dict)


async def rebuild_view(
    settings: Settings,
    view: RedisView,
    topic: str,
    *,
    batch_size: int = 1000,
    metrics: Metrics | None = None,
    progress: Callable[[int, int], Awaitable[None] | None] | None = None,
) -> RebuildSummary:
    """Wipe the view's prefix, then apply every record of `topic` from the beginning up to the
    end offsets seen at the start; no consumer group is used (nothing is committed).

    `progress(done, total)` is called after each batch."""
    began = time.perf_counter()
    summary = RebuildSummary()
    summary.deleted_keys = await view.wipe()
    await view.mark_layout()
    partitions = [TopicPartition(topic, p) for p in await topic_partitions(settings, topic)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        begin = await consumer.beginning_offsets(partitions)
        total = sum(max(0, end[tp] - begin[tp]) for tp in partitions)
        for tp in partitions:
            consumer.seek(tp, begin[tp])
        remaining = {tp for tp in partitions if end[tp] > begin[tp]}
        backoff = Backoff(0.1, 10.0)
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=batch_size)
            for tp, messages in batch.items():
                wanted = [m for m in messages if m.offset < end[tp]]
                summary.records += len(wanted)
                changes = decode_records(wanted, metrics)
                if len(changes) < len(wanted):
                    summary.outcomes[INVALID] += len(wanted) - len(changes)
                outcomes = await apply_with_retry(view, changes, backoff=backoff,
                                                  metrics=metrics)
                assert outcomes is not None  # no stop event: retries until Redis answers
                summary.outcomes.update(outcomes)
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
            if progress is not None:
                result = progress(summary.records, total)
                if result is not None:
                    await result
    finally:
        await consumer.stop()
    summary.sizes = await view.sizes()
    summary.seconds = time.perf_counter() - began
    return summary
