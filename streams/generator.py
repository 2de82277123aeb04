"""Seedable synthetic event generator: customers with personas, used by tests, demo and bench.

Each customer gets a persona (VIP, regular, occasional, window shopper, newsletter reader,
lapsing, new customer) with its own purchase, email and web behaviour; lapsing customers go quiet
part-way through the period, new customers only appear after they join. Events come as episodes:
a web session (page views, product views, searches, carts, checkouts), an email funnel
(sent -> delivered or bounce -> open -> click, sometimes an unsubscribe), an order (often after a
checkout_started, with items from a priced catalogue, sometimes refunded days later), a profile
update now and then, and (only if asked) a customer erasure.

The period is cut into one-hour buckets; each family (web, email, purchases, profile) gets a
share of its exact event budget in every bucket, weighted by a daily curve. Episodes started in
a bucket may schedule events into later buckets; a bucket is sorted by ts when it is complete and
yielded. So the stream is in non-decreasing ts order, holds exactly `events` events with exact
per-family counts, keeps in memory only the events scheduled ahead (hours; a few refunds days
ahead), not the whole run, and is the same for the same arguments.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from operator import attrgetter

import orjson

from model.events import (
    MAX_TS_MS,
    Event,
    encode_event,
    event_to_wire,
    new_event,
    new_item,
)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
SHOP_URL = "https://shop.example.com"

# Relative activity by hour of day (UTC): quiet nights, busy evenings.
_DAILY_CURVE = (0.20, 0.12, 0.08, 0.06, 0.06, 0.10, 0.25, 0.50, 0.80, 1.00, 1.05, 1.10,
                1.10, 1.05, 1.00, 1.00, 1.05, 1.15, 1.30, 1.45, 1.50, 1.30, 0.90, 0.50)


@dataclass(frozen=True, slots=True)
class Persona:
    """How a kind of customer behaves. Rates are relative to the other personas."""

    name: str
    share: float  # fraction of customers
    web: float  # rate of web sessions
    email: float  # rate of marketing emails received
    purchase: float  # rate of orders
    max_items: int  # distinct items in an order: 1..max_items
    premium: float  # 0 = buys by popularity, 1 = strongly prefers expensive categories
    open_rate: float  # P(open | delivered)
    click_rate: float  # P(click | open)
    cart_rate: float  # P(add_to_cart | web session)
    checkout_rate: float  # P(checkout_started | cart)
    refund_rate: float  # P(refund | order)
    unsubscribe_rate: float  # P(unsubscribe | open)
    lifecycle: str = "steady"  # "steady", "lapsing" (goes quiet) or "new" (joins later)


PERSONAS: tuple[Persona, ...] = (
    Persona("vip", 0.04, 3.0, 1.0, 8.0, 5, 1.0, 0.55, 0.35, 0.60, 0.80, 0.06, 0.001),
    Persona("regular", 0.22, 1.5, 1.0, 2.5, 3, 0.3, 0.35, 0.20, 0.35, 0.60, 0.05, 0.003),
    Persona("occasional", 0.24, 0.6, 1.0, 0.7, 2, 0.2, 0.20, 0.10, 0.20, 0.40, 0.04, 0.006),
    Persona("window_shopper", 0.14, 3.0, 0.8, 0.15, 2, 0.4, 0.25, 0.15, 0.45, 0.20, 0.08, 0.004),
    Persona("newsletter_reader", 0.14, 0.8, 2.5, 0.8, 2, 0.2, 0.70, 0.40, 0.30, 0.50, 0.03,
            0.002),
    Persona("lapsing", 0.12, 1.5, 1.0, 2.0, 3, 0.3, 0.30, 0.15, 0.35, 0.60, 0.05, 0.010,
            "lapsing"),
    Persona("new_customer", 0.10, 2.0, 0.7, 2.0, 3, 0.3, 0.45, 0.25, 0.40, 0.60, 0.05, 0.003,
            "new"),
)

# After a lapsing customer has lapsed: how much of each family's rate is left.
_LAPSED_WEB, _LAPSED_EMAIL, _LAPSED_PURCHASE, _LAPSED_OPEN = 0.03, 1.0, 0.02, 0.1


@dataclass(frozen=True, slots=True)
class _Category:
    name: str
    prefix: str
    median_price: float  # PLN
    skus: int
    popularity: float


_CATEGORIES = (
    _Category("electronics", "EL", 900.0, 400, 1.0),
    _Category("fashion", "FA", 160.0, 800, 1.6),
    _Category("home", "HO", 220.0, 600, 1.2),
    _Category("beauty", "BE", 70.0, 400, 1.2),
    _Category("sports", "SP", 260.0, 400, 0.8),
    _Category("books", "BK", 45.0, 1000, 1.0),
    _Category("toys", "TO", 120.0, 400, 0.7),
    _Category("grocery", "GR", 35.0, 600, 0.9),
    _Category("garden", "GA", 190.0, 300, 0.5),
    _Category("jewelry", "JE", 1200.0, 200, 0.3),
)
_CITIES = ("Warszawa", "Kraków", "Łódź", "Wrocław", "Poznań", "Gdańsk", "Szczecin", "Lublin")
_SEARCHES = ("laptop", "sukienka", "buty do biegania", "krem", "lego", "kawa", "rower", "zegarek")
_PAGES = ("/", "/promocje", "/nowosci", "/kontakt", "/blog", "/koszyk", "/konto")
_BAD_TYPES = ("email_opened", "pageview", "purchase_completed", "Purchase", "click")


def assign_personas(customers: int, seed: int) -> tuple[Persona, ...]:
    """The persona of each customer index (customer id `customer_id(i, customers)`): exact
    shares (largest remainder), shuffled by the seed."""
    quotas = [p.share * customers for p in PERSONAS]
    counts = [int(q) for q in quotas]
    by_remainder = sorted(range(len(PERSONAS)), key=lambda i: counts[i] - quotas[i])
    for i in by_remainder[: customers - sum(counts)]:
        counts[i] += 1
    out = [p for p, n in zip(PERSONAS, counts, strict=True) for _ in range(n)]
    random.Random(f"personas-{seed}").shuffle(out)
    return tuple(out)


def customer_id(index: int, customers: int) -> str:
    return f"cust-{index:0{max(6, len(str(customers - 1)))}d}"


def generate(
    *,
    customers: int,
    events: int,
    seed: int,
    start_ms: int,
    days: float = 90.0,
    currency: str = "PLN",
    mix: tuple[float, float, float] = (0.5, 0.35, 0.15),
    profile_fraction: float = 0.005,
    erasures: bool = False,
) -> Iterator[Event]:
    """Exactly `events` valid events for `customers` customers over [start_ms, start_ms + days),
    in non-decreasing ts order, with unique event ids; the same for the same arguments.

    `mix` is the (web, email, purchase+refund) split of the events that are not profile events;
    `profile_fraction` of all events are profile_update (and, with `erasures`, a few
    customer_erased). Amounts are in `currency` and sized for PLN. Raises ValueError on bad
    arguments."""
    run = _Run(customers=customers, events=events, seed=seed, start_ms=start_ms, days=days,
               currency=currency, mix=mix, profile_fraction=profile_fraction, erasures=erasures)
    return run.events()


def generate_raw(
    *,
    customers: int,
    events: int,
    seed: int,
    start_ms: int,
    days: float = 90.0,
    currency: str = "PLN",
    mix: tuple[float, float, float] = (0.5, 0.35, 0.15),
    profile_fraction: float = 0.005,
    erasures: bool = False,
    bad_fraction: float = 0.0,
) -> Iterator[bytes]:
    """The events of `generate` as wire bytes (one JSON object each, no newline), with bad
    records mixed in: about `bad_fraction` of all records (0 <= bad_fraction < 1) are inserted
    bad ones (malformed JSON, invalid UTF-8, not an object, a missing field, a wrong type, an
    unknown type, a naive timestamp, a wrong currency, a negative amount, a too long id), each
    rejected by parse_event. The good records are exactly those of `generate`."""
    if not 0.0 <= bad_fraction < 1.0:
        raise ValueError(f"bad_fraction must be in [0, 1), got {bad_fraction}")
    good = generate(customers=customers, events=events, seed=seed, start_ms=start_ms, days=days,
                    currency=currency, mix=mix, profile_fraction=profile_fraction,
                    erasures=erasures)
    if bad_fraction == 0.0:
        return (encode_event(e) for e in good)
    return _with_bad_records(good, seed, currency, bad_fraction / (1.0 - bad_fraction))


def _with_bad_records(
    good: Iterator[Event], seed: int, currency: str, insert_rate: float
) -> Iterator[bytes]:
    rng = random.Random(f"bad-{seed}")
    random_ = rng.random
    for event in good:
        while random_() < insert_rate / (1.0 + insert_rate):  # geometric: mean insert_rate
            yield _bad_record(event, rng, currency)
        yield encode_event(event)


def _bad_record(event: Event, rng: random.Random, currency: str) -> bytes:
    """A record derived from `event` that parse_event must reject."""
    wire = event_to_wire(event)
    kind = rng.randrange(10)
    if kind >= 8 and event.type not in ("purchase", "refund"):
        kind = rng.randrange(8)
    if kind == 0:  # malformed JSON: cut short
        data = orjson.dumps(wire)
        return data[: rng.randrange(1, len(data))]
    if kind == 1:  # invalid UTF-8
        data = orjson.dumps(wire)
        return data[:10] + b"\xff\xfe" + data[10:]
    if kind == 2:  # not an object
        return orjson.dumps([wire])
    if kind == 3:  # a required field missing
        del wire[rng.choice(("event_id", "customer_id", "type", "ts"))]
    elif kind == 4:  # wrong JSON type
        wire[rng.choice(("ts", "customer_id", "event_id"))] = rng.choice((True, 12.5, [1], {}))
    elif kind == 5:
        wire["type"] = rng.choice(_BAD_TYPES)
    elif kind == 6:  # naive timestamp (no zone offset)
        naive = datetime.fromtimestamp(event.ts / 1000, UTC).replace(tzinfo=None)
        wire["ts"] = naive.isoformat(timespec="milliseconds")
    elif kind == 7:
        wire["customer_id"] = "c" * rng.randrange(129, 300)
    elif kind == 8:
        wire["currency"] = "EUR" if currency != "EUR" else "USD"
    else:
        wire["amount"] = -round(event.amount + 1.0 + rng.random() * 100, 2)
    return orjson.dumps(wire)


# (persona, its customer ids, lo, hi, rate factor): pick among ids[lo:hi]
_Choice = tuple[Persona, list[str], int, int, float]
# cumulative weights of the choices, the choices
_Activity = tuple[list[float], list[_Choice]]


class _Run:
    """The state of one generation run (not reusable)."""

    def __init__(
        self, *, customers: int, events: int, seed: int, start_ms: int, days: float,
        currency: str, mix: tuple[float, float, float], profile_fraction: float, erasures: bool,
    ) -> None:
        _check_arguments(customers, events, start_ms, days, currency, mix, profile_fraction)
        self.rng = random.Random(seed)
        self.currency = currency
        self.erasures = erasures
        self.start = start_ms
        self.end = start_ms + max(1, int(days * DAY_MS))
        self.buckets: list[list[Event]] = [[] for _ in range(-(-(self.end - start_ms) // HOUR_MS))]
        self.tag = format(seed, "x")
        self.seq = 0  # event ids
        self.orders = 0
        self.sessions = 0
        self.unsubscribed: set[str] = set()
        self.active: list[_Activity] = []  # per family, for the current bucket

        n_profile = round(events * profile_fraction)
        rest = events - n_profile
        total_mix = sum(mix)
        n_purchase = round(rest * mix[2] / total_mix)
        n_email = round(rest * mix[1] / total_mix)
        # family index: 0 web, 1 email, 2 purchase, 3 profile
        self.budget = [rest - n_purchase - n_email, n_email, n_purchase, n_profile]
        self.count = [0, 0, 0, 0]

        rng = self.rng
        personas = assign_personas(customers, seed)
        ids = [customer_id(i, customers) for i in range(customers)]
        self.all_ids = ids
        # Per persona: customer ids; lapsing ones sorted by lapse time, new ones by join time.
        self.groups: list[tuple[Persona, list[str], list[int]]] = []
        span = self.end - self.start
        for persona in PERSONAS:
            members = [cid for cid, p in zip(ids, personas, strict=True) if p is persona]
            if persona.lifecycle == "steady":
                times: list[int] = []
            elif persona.lifecycle == "lapsing":
                times = sorted(self.start + int(span * rng.uniform(0.1, 0.7)) for _ in members)
            else:
                times = sorted(self.start + int(span * rng.random()) for _ in members)
            self.groups.append((persona, members, times))

        # The catalogue: per category, SKU codes and their prices (fixed for a run).
        self.skus = [[f"{c.prefix}-{i:05d}" for i in range(c.skus)] for c in _CATEGORIES]
        self.prices = [
            [_price(c.median_price * math.exp(rng.gauss(0.0, 0.5))) for _ in range(c.skus)]
            for c in _CATEGORIES
        ]
        # Per persona: cumulative category weights (premium buyers prefer expensive ones).
        self.category_cum = {
            p.name: list(accumulate(c.popularity * (c.median_price / 100.0) ** (0.6 * p.premium)
                                    for c in _CATEGORIES))
            for p in PERSONAS
        }

    # --- the bucket loop ------------------------------------------------------------------------

    def events(self) -> Iterator[Event]:
        n = len(self.buckets)
        weights = []
        for b in range(n):
            b_start = self.start + b * HOUR_MS
            length = min(HOUR_MS, self.end - b_start)
            weights.append(_DAILY_CURVE[(b_start // HOUR_MS) % 24] * length / HOUR_MS)
        cum = list(accumulate(weights))
        total = cum[-1]
        episodes = (self._purchase_episode, self._email_episode, self._profile_episode,
                    self._web_session)
        order = (2, 1, 3, 0)  # web last: orders add checkout_started events to it
        key = attrgetter("ts")
        for b in range(n):
            b_start = self.start + b * HOUR_MS
            b_len = min(HOUR_MS, self.end - b_start)
            self.active = self._activity(b_start)
            for family, episode in zip(order, episodes, strict=True):
                budget = self.budget[family]
                target = budget if b == n - 1 else round(budget * cum[b] / total)
                while self.count[family] < target:
                    episode(b_start + int(self.rng.random() * b_len))
            bucket = self.buckets[b]
            self.buckets[b] = []
            bucket.sort(key=key)
            yield from bucket

    def _activity(self, t: int) -> list[_Activity]:
        """Per family: cumulative weights and (persona, ids, lo, hi, factor) choices at time t;
        ids[lo:hi] are the customers the choice picks from, `factor` scales persona rates."""
        out = []
        for family in range(4):
            choices: list[_Choice] = []
            weights: list[float] = []
            for persona, members, times in self.groups:
                if not members:
                    continue
                rate = (persona.web, persona.email, persona.purchase, 1.0)[family]
                if persona.lifecycle == "steady":
                    parts = [(0, len(members), 1.0)]
                elif persona.lifecycle == "lapsing":
                    lapsed = bisect_right(times, t)  # members[:lapsed] have lapsed by t
                    factor = (_LAPSED_WEB, _LAPSED_EMAIL, _LAPSED_PURCHASE, 1.0)[family]
                    parts = [(lapsed, len(members), 1.0), (0, lapsed, factor)]
                else:
                    parts = [(0, bisect_right(times, t), 1.0)]  # joined by t
                for lo, hi, factor in parts:
                    if hi > lo and rate * factor > 0:
                        choices.append((persona, members, lo, hi, factor))
                        weights.append((hi - lo) * rate * factor)
            out.append((list(accumulate(weights)), choices))
        return out

    def _pick(self, family: int) -> tuple[Persona, str, float]:
        """A customer for an episode of `family`: persona by weight, then a customer of that
        persona, skewed so that some customers are much more active than others."""
        cum, choices = self.active[family]
        rng = self.rng
        if not cum:
            cid = self.all_ids[int(rng.random() * len(self.all_ids))]
            return PERSONAS[1], cid, 1.0
        index = bisect_right(cum, rng.random() * cum[-1])
        persona, members, lo, hi, factor = choices[min(index, len(choices) - 1)]
        r = rng.random()
        if persona.lifecycle == "steady":
            r *= r
        return persona, members[lo + int(r * (hi - lo))], factor

    # --- emitting -------------------------------------------------------------------------------

    def _room(self, family: int) -> bool:
        return self.count[family] < self.budget[family]

    def _put(self, family: int, event: Event) -> bool:
        """Schedule an event; False (and nothing done) if its family's budget is used up or it
        falls after the end of the period."""
        if self.count[family] >= self.budget[family] or event.ts >= self.end:
            return False
        self.count[family] += 1
        self.buckets[(event.ts - self.start) // HOUR_MS].append(event)
        return True

    def _id(self) -> str:
        self.seq += 1
        return f"ev-{self.tag}-{self.seq}"

    # --- episodes -------------------------------------------------------------------------------

    def _web_session(self, t: int) -> None:
        persona, cid, _ = self._pick(0)
        rng = self.rng
        random_ = rng.random
        self.sessions += 1
        sid = f"s-{self.tag}-{self.sessions}"
        put = self._put
        new_id = self._id
        if not put(0, new_event(new_id(), cid, "page_view", t, session_id=sid,
                                url=SHOP_URL + _PAGES[int(random_() * len(_PAGES))])):
            return
        steps = 1 + int(-math.log(1.0 - random_()) * 2.5)  # geometric-like, mean ~3
        viewed: list[tuple[int, int]] = []
        for _ in range(steps):
            t += 5_000 + int(random_() * 90_000)
            r = random_()
            if r < 0.55:
                c, k = self._product(persona)
                viewed.append((c, k))
                sku = self.skus[c][k]
                event = new_event(new_id(), cid, "product_view", t, session_id=sid,
                                  url=f"{SHOP_URL}/p/{sku}", sku=sku,
                                  category=_CATEGORIES[c].name)
            elif r < 0.75:
                event = new_event(new_id(), cid, "page_view", t, session_id=sid,
                                  url=SHOP_URL + _PAGES[int(random_() * len(_PAGES))])
            elif r < 0.92:
                query = _SEARCHES[int(random_() * len(_SEARCHES))]
                event = new_event(new_id(), cid, "search", t, session_id=sid,
                                  url=f"{SHOP_URL}/szukaj?q={query}")
            elif r < 0.97:
                event = new_event(new_id(), cid, "form_submit", t, session_id=sid,
                                  url=f"{SHOP_URL}/newsletter")
            else:
                event = new_event(new_id(), cid, "download", t, session_id=sid,
                                  url=f"{SHOP_URL}/katalog.pdf")
            if not put(0, event):
                return
        if viewed and random_() < persona.cart_rate:
            c, k = viewed[-1]
            t += 10_000 + int(random_() * 60_000)
            if not put(0, new_event(new_id(), cid, "add_to_cart", t, session_id=sid,
                                    sku=self.skus[c][k], category=_CATEGORIES[c].name)):
                return
            if random_() < persona.checkout_rate * 0.5:  # the rest are orders' own checkouts
                t += 20_000 + int(random_() * 120_000)
                put(0, new_event(new_id(), cid, "checkout_started", t, session_id=sid,
                                 url=f"{SHOP_URL}/checkout"))

    def _email_episode(self, t: int) -> None:
        persona, cid, factor = self._pick(1)
        if cid in self.unsubscribed:
            for _ in range(5):
                persona, cid, factor = self._pick(1)
                if cid not in self.unsubscribed:
                    break
        rng = self.rng
        random_ = rng.random
        week = (t - self.start) // (7 * DAY_MS)
        campaign = f"cmp-{week:03d}{'abc'[int(random_() * 3)]}"
        put = self._put
        new_id = self._id
        if not put(1, new_event(new_id(), cid, "email_sent", t, campaign_id=campaign)):
            return
        t += 1_000 + int(random_() * 30_000)
        if random_() < 0.02:
            put(1, new_event(new_id(), cid, "email_bounce", t, campaign_id=campaign))
            return
        if not put(1, new_event(new_id(), cid, "email_delivered", t, campaign_id=campaign)):
            return
        open_rate = persona.open_rate * (_LAPSED_OPEN if factor != 1.0 else 1.0)
        if random_() >= open_rate:
            return
        t += 60_000 + int(min(-math.log(1.0 - random_()) * 3 * HOUR_MS, 3 * DAY_MS))
        if not put(1, new_event(new_id(), cid, "email_open", t, campaign_id=campaign)):
            return
        if random_() < persona.unsubscribe_rate:
            t += 5_000 + int(random_() * 60_000)
            if put(1, new_event(new_id(), cid, "email_unsubscribe", t, campaign_id=campaign)):
                self.unsubscribed.add(cid)
            return
        if random_() < persona.click_rate:
            t += 3_000 + int(random_() * 120_000)
            put(1, new_event(new_id(), cid, "email_click", t, campaign_id=campaign))

    def _purchase_episode(self, t: int) -> None:
        persona, cid, _ = self._pick(2)
        rng = self.rng
        random_ = rng.random
        paid = t + 30_000 + int(random_() * 240_000)
        n_items = 1 + int(random_() * persona.max_items)
        items = []
        for _ in range(n_items):
            c, k = self._product(persona)
            r = random_()
            quantity = 1 if r < 0.85 else 2 if r < 0.97 else 3
            items.append(new_item(self.skus[c][k], _CATEGORIES[c].name, quantity,
                                  self.prices[c][k]))
        if random_() < 0.6 and paid < self.end:  # an online order: cart and checkout first
            self.sessions += 1
            sid = f"s-{self.tag}-{self.sessions}"
            first = items[0]
            if self._put(0, new_event(self._id(), cid, "add_to_cart", t, session_id=sid,
                                      sku=first.sku, category=first.category)):
                self._put(0, new_event(self._id(), cid, "checkout_started", t + 15_000,
                                       session_id=sid, url=f"{SHOP_URL}/checkout"))
            t = paid
        amount = round(sum(i.quantity * i.price for i in items), 2)
        self.orders += 1
        order_id = f"o-{self.tag}-{self.orders}"
        with_items = random_() < 0.9  # some sources (e.g. in-store) send the total only
        if not self._put(2, new_event(self._id(), cid, "purchase", t, amount, self.currency,
                                      order_id, tuple(items) if with_items else ())):
            return
        if random_() < persona.refund_rate and self._room(2):
            t += DAY_MS + int(random_() * 20 * DAY_MS)
            if random_() < 0.5 or len(items) == 1:
                returned = items
            else:
                returned = [items[int(random_() * len(items))]]
            refund = round(sum(i.quantity * i.price for i in returned), 2)
            self._put(2, new_event(self._id(), cid, "refund", t, refund, self.currency,
                                   order_id, tuple(returned) if with_items else ()))

    def _profile_episode(self, t: int) -> None:
        _, cid, _ = self._pick(3)
        rng = self.rng
        if self.erasures and rng.random() < 0.05:
            self._put(3, new_event(self._id(), cid, "customer_erased", t))
            self.unsubscribed.discard(cid)
            return
        attributes: dict[str, str | int | float | bool | None] = {}
        for _ in range(1 + int(rng.random() * 3)):
            r = rng.random()
            if r < 0.25:
                attributes["city"] = rng.choice(_CITIES)
            elif r < 0.45:
                attributes["marketing_consent"] = rng.random() < 0.7
            elif r < 0.6:
                attributes["loyalty_member"] = rng.random() < 0.4
            elif r < 0.75:
                attributes["birth_year"] = rng.randint(1950, 2006)
            elif r < 0.9:
                attributes["preferred_channel"] = rng.choice(("email", "sms", "app"))
            else:
                code = f"RABAT{rng.randint(5, 30)}"
                attributes["coupon_code"] = None if rng.random() < 0.5 else code  # null: remove
        self._put(3, new_event(self._id(), cid, "profile_update", t, attributes=attributes))

    def _product(self, persona: Persona) -> tuple[int, int]:
        """(category index, sku index): category by the persona's taste, sku by popularity."""
        cum = self.category_cum[persona.name]
        rng = self.rng
        c = bisect_right(cum, rng.random() * cum[-1])
        r = rng.random()
        return c, int(r * r * len(self.skus[c]))


def _price(value: float) -> float:
    """A shop-like price: x.99, at least 4.99."""
    return max(4.99, math.floor(value) + 0.99)


def _check_arguments(
    customers: int, events: int, start_ms: int, days: float, currency: str,
    mix: tuple[float, float, float], profile_fraction: float,
) -> None:
    if customers < 1:
        raise ValueError(f"customers must be >= 1, got {customers}")
    if events < 0:
        raise ValueError(f"events must be >= 0, got {events}")
    if not (days > 0 and math.isfinite(days)):
        raise ValueError(f"days must be a positive number, got {days}")
    if start_ms < 0 or start_ms + days * DAY_MS > MAX_TS_MS:
        raise ValueError(f"start_ms {start_ms} (+ {days} days) is outside the timestamp range")
    if len(currency) != 3 or not (currency.isascii() and currency.isalpha()
                                  and currency.isupper()):
        raise ValueError(f"currency must be an ISO 4217 code, got {currency!r}")
    if len(mix) != 3 or any(not (x >= 0 and math.isfinite(x)) for x in mix) or sum(mix) <= 0:
        raise ValueError(f"mix must be three non-negative fractions, not all 0, got {mix}")
    if not 0.0 <= profile_fraction <= 1.0:
        raise ValueError(f"profile_fraction must be in [0, 1], got {profile_fraction}")


__all__ = ["DAY_MS", "HOUR_MS", "PERSONAS", "Persona", "assign_personas", "customer_id",
           "generate", "generate_raw"]
