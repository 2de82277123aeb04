"""Webhooks and issue 14: filters on pipeline moves (`pipelines:`, `on: [pipeline_move]`) and
control groups (held-out customers' follow-ups skipped unless `include_control: true`); pure,
then end to end from a real worker on the real broker to a real HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry

from connectors.changes import change_from_wire
from connectors.webhooks import ConnectorsConfig, parse_connectors_config, run_webhooks
from model.errors import ConnectorConfigError
from model.events import encode_event
from rules.pipelines import held_out
from streams.runtime.metrics import Metrics
from streams.runtime.settings import Settings
from streams.simulate import Simulator
from tests.connectors.factories import wire_change
from tests.connectors.hook_server import HookServer
from tests.connectors.test_webhooks import SECRET, endpoint, eventually
from tests.streams.workers import (
    DAY,
    HOUR,
    PARTITIONS,
    T0,
    Collector,
    cluster,
    ev,
    produce,
    sentinels,
    wire,
    write_rules,
)

RULES = """\
version: 1
name: hooks
settings: {currency: PLN, control_salt: hooks}
segments:
  - {id: vip, group: tier, when: purchase_amount(30d) >= 1000, control: 50%}
  - {id: buyer, group: tier, when: purchase_count(30d) >= 1}
pipelines:
  - {id: premium, when: [vip], follow_ups: {enter: [call]}}
  - {id: occasional, when: [buyer]}
  - {id: prospect}
"""


def change(**kw: Any) -> Any:
    wire_obj = wire_change(kw.pop("cid", "c-1"), kw.pop("seq", 1), segments=kw.pop("segments"),
                           previous=kw.pop("previous", []))
    return change_from_wire({**wire_obj, **kw})


def test_pipeline_filters() -> None:
    up = change(segments=["vip"], previous=["buyer"],
                pipeline={"from": "occasional", "to": "premium"})
    plain = change(segments=["buyer"])
    assert up.pipeline == {"from": "occasional", "to": "premium"} and plain.pipeline is None
    premium = endpoint(pipelines=frozenset({"premium"}))
    assert premium.matches(up) and not premium.matches(plain)  # pipelines alone: moves only
    assert not endpoint(pipelines=frozenset({"retention"})).matches(up)
    moves = endpoint(on=frozenset({"pipeline_move"}))
    assert moves.matches(up) and not moves.matches(plain)
    # `pipelines` with segments: either an entry of those segments or a move of those pipelines
    both = endpoint(segments=frozenset({"buyer"}), pipelines=frozenset({"premium"}))
    assert both.matches(up) and both.matches(plain)
    rules_only = change(segments=["vip"], previous=["vip"],
                        pipeline={"from": None, "to": "premium"})
    assert premium.matches(rules_only)  # a roll-out's move: no entry, still a move


def test_control_skips_held_out_follow_ups_unless_asked() -> None:
    held = change(segments=["vip"], previous=["buyer"], control=["vip"],
                  pipeline={"from": "occasional", "to": "premium"})
    assert held.control == {"vip"}
    assert not endpoint(segments=frozenset({"vip"})).matches(held)
    assert endpoint(segments=frozenset({"vip"}), include_control=True).matches(held)
    assert endpoint(segments=frozenset({"buyer"}), on=frozenset({"exited"})).matches(held)
    # the pipeline move came from held-out segments only... and the buyer exit (not held out)
    assert endpoint(pipelines=frozenset({"premium"})).matches(held)
    only_held = change(segments=["vip"], control=["vip"],
                       pipeline={"from": "prospect", "to": "premium"})
    assert not endpoint(pipelines=frozenset({"premium"})).matches(only_held)
    assert endpoint(pipelines=frozenset({"premium"}), include_control=True).matches(only_held)


def test_config_reads_the_new_keys() -> None:
    config = parse_connectors_config({"webhooks": [
        {"name": "a", "url": "http://x/", "secret": "s", "pipelines": ["premium"],
         "on": ["entered", "pipeline_move"], "include_control": True}]})
    [hook] = config.webhooks
    assert hook.pipelines == {"premium"} and hook.include_control
    assert hook.on == {"entered", "pipeline_move"}
    with pytest.raises(ConnectorConfigError) as info:
        parse_connectors_config({"webhooks": [
            {"name": "a", "url": "http://x/", "secret": "s", "on": ["moved"],
             "include_control": "yes", "pipelines": "premium"}]})
    text = str(info.value)
    assert "'on' must list entered, exited and/or pipeline_move" in text
    assert "'include_control' must be true or false" in text


@pytest_asyncio.fixture(loop_scope="session")
async def server() -> AsyncIterator[HookServer]:
    hooks = await HookServer(SECRET).start()
    yield hooks
    await hooks.stop()


@pytest.mark.integration
async def test_worker_changes_reach_the_endpoints_that_filter_on_them(
        kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, server: HookServer,
        unique: str, tmp_path: Path) -> None:
    path, rules = write_rules(tmp_path, "hooks", RULES)
    ids = [f"c-{i}" for i in range(40)]
    held = [c for c in ids if held_out(c, "vip", 0.5, "hooks")][:3]
    treated = [c for c in ids if not held_out(c, "vip", 0.5, "hooks")][:3]
    events = []
    for n, cid in enumerate(held + treated):
        events.append(ev("purchase", cid, T0 + n * HOUR, amount=200.0))  # buyer: occasional
        events.append(ev("purchase", cid, T0 + DAY + n * HOUR, amount=1500.0))  # vip: premium
    events.extend(sentinels(PARTITIONS, T0 + 50 * DAY))  # every partition's clock: time-outs
    hooks = {
        "premium": endpoint(server.url("premium"), name="premium",
                            pipelines=frozenset({"premium"}), start="earliest"),
        "moves": endpoint(server.url("moves"), name="moves", on=frozenset({"pipeline_move"}),
                          start="earliest"),
        "vip": endpoint(server.url("vip"), name="vip", segments=frozenset({"vip"}),
                        on=frozenset({"entered"}), start="earliest"),
        "vip_all": endpoint(server.url("vip_all"), name="vip_all", segments=frozenset({"vip"}),
                            on=frozenset({"entered"}), include_control=True, start="earliest"),
    }
    reference: list[Any] = []
    sim = Simulator(rules, on_change=lambda c: reference.append(change_from_wire(c.to_wire())))
    sim.feed_lines(encode_event(e) for e in events)
    sim.finish()
    want = {name: sorted((c.customer_id, c.seq) for c in reference if hook.matches(c))
            for name, hook in hooks.items()}
    assert len(want["vip_all"]) == 6 and len(want["vip"]) == 3  # control held out 3
    assert {cid for cid, _ in want["vip"]} == set(treated)
    assert len(want["moves"]) > len(want["premium"]) > 0
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path) as c:
        await produce(kafka_bootstrap, ((c.topic(t), k, v) for t, k, v in map(wire, events)))
        async with Collector(kafka_bootstrap, c.topic("segment-changes")) as col:
            w = c.start("--rules", str(path))
            await col.wait("the changes", lambda: len(col.records) >= len(reference),
                           workers=[w])
        settings = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap)
        stop = asyncio.Event()
        task = asyncio.create_task(run_webhooks(
            settings, ConnectorsConfig(tuple(hooks.values())),
            topic=c.topic("segment-changes"), dead_letter_topic=c.topic("hook-dead"),
            stop=stop, metrics=Metrics(CollectorRegistry()), group_prefix=f"{unique}."))
        try:
            def delivered() -> bool:
                return all(len(server.ok_hits(n)) >= len(want[n]) for n in hooks)
            await eventually(delivered, 60)
            await asyncio.sleep(1.0)  # nothing more arrives
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    for name in hooks:
        got = sorted((h.json["customer_id"], h.json["seq"]) for h in server.ok_hits(name))
        assert got == want[name], name
    for h in server.ok_hits("moves"):
        move = h.json["pipeline"]
        assert isinstance(move, dict) and move["from"] != move["to"]
