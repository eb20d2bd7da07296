"""The checkout every scenario varies, with the times worked out by hand.

    gateway POST /checkout                      [0, 60]
    +- gateway -> orders POST /orders           client [2, 50], server [3, 49]
       +- orders INSERT INTO orders (db)        [5, 10]
       +- orders -> fulfilment orders.created   publish [12, 14], consumed from 14 + queue_delay
          +- fulfilment -> inventory GET /stock/{sku}   30 ms (each attempt)
          +- fulfilment -> pricing GET /price/{sku}     50 ms

The fulfilment consumer is the request's end: it starts 1 ms before its first call and ends 1 ms
after its last one. With the defaults the request lasts 102 ms: 19 ms to the consumer's start,
1 ms before inventory, 30 ms inventory, 1 ms gap, 50 ms pricing, 1 ms after.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sdk_requests import Request


@dataclass(frozen=True)
class Shape:
    """What one variant of the checkout does differently."""

    queue_delay: float = 5.0
    inventory: tuple[tuple[float, int], ...] = ((30.0, 200),)  # (duration, status) per attempt
    retry_gap: float = 2.0  # between attempts
    inventory_resend: bool = False  # later attempts carry http.request.resend_count
    inventory_error: str | None = None  # a failed attempt's message (else "HTTP <status>")
    pricing_ms: float = 50.0
    gap: float = 1.0  # between inventory and pricing when sequential
    parallel: bool = False  # pricing starts 1 ms after inventory, both in flight together
    pricing_first: bool = False
    inventory_db: bool = False  # inventory queries its database: 10 ms more, own work the same
    cache_ms: float | None = None  # a cache call before inventory
    jitter: random.Random | None = field(default=None, compare=False)


def build(req: Request, shape: Shape) -> None:
    """Emit one checkout of ``shape`` through ``req``'s services."""
    gateway = req.entry("gateway", "/checkout", 0, 60)
    _, orders = req.call(gateway, "orders", "/orders", 2, 50, method="POST")
    req.db(orders, "INSERT INTO orders", 5, 10)
    created = req.publish(orders, "orders.created", 12, 14)
    begin = 14 + shape.queue_delay
    calls = _fulfilment_calls(begin + 1, shape)
    fulfilment = req.consume("fulfilment", created, begin, max(c[3] for c in calls) + 1)
    for number, (service, route, start, end, status) in enumerate(calls):
        resend = number if shape.inventory_resend and service == "inventory" else None
        error = shape.inventory_error if service == "inventory" else None
        _, server = req.call(fulfilment, service, route, start, end, status=status,
                             resend=resend or None, error=error)  # fmt: skip
        if service == "inventory" and shape.inventory_db and status < 500:
            req.db(server, "SELECT stock", start + 5, start + 5 + DB_MS)


Call = tuple[str, str, float, float, int]
DB_MS = 10.0


def _fulfilment_calls(at: float, shape: Shape) -> list[Call]:
    calls: list[Call] = []
    if shape.cache_ms is not None:
        cache = _jittered(shape.cache_ms, shape)
        calls.append(("cache", "/cache/{key}", at, at + cache, 200))
        at += cache + 1
    inventory: list[Call] = []
    for duration, status in shape.inventory:
        took = _jittered(duration, shape) + (DB_MS if shape.inventory_db else 0)
        inventory.append(("inventory", "/stock/{sku}", at, at + took, status))
        at += took + shape.retry_gap
    at -= shape.retry_gap
    pricing_ms = _jittered(shape.pricing_ms, shape)
    if shape.parallel:
        pricing_start = inventory[0][2] + 1
    elif shape.pricing_first:
        pricing_start = inventory[0][2]
        shift = pricing_ms + shape.gap
        inventory = [(s, r, a + shift, b + shift, st) for s, r, a, b, st in inventory]
    else:
        pricing_start = at + shape.gap
    pricing: Call = ("pricing", "/price/{sku}", pricing_start, pricing_start + pricing_ms, 200)
    ordered = [pricing, *inventory] if shape.pricing_first else [*inventory, pricing]
    return [*calls, *ordered]


def _jittered(ms: float, shape: Shape) -> float:
    return ms * shape.jitter.lognormvariate(0, 0.15) if shape.jitter else ms
