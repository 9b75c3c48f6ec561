"""Which WebSocket clients get which part of a batch, and the bytes they get (no I/O).

Clients with the same channel patterns form one :class:`Route`: a batch is matched once per
route, not once per client, and every client of the route gets the same :class:`Frame` objects.
A route is looked up by data type, then by channel (``klines:1m:BTCUSDT``) for patterns without a
wildcard, so a client costs nothing for data it did not subscribe to.

Each route gets, per envelope of the batch, one message holding every record it subscribed to,
however many channels they belong to (a 5-minute boundary closes a 1m and a 5m bar per symbol:
still one message). Clients that ask for the per-channel form (``{"op": "set", "messages":
"per_channel"}``) get one message per channel instead, as before. Records of one channel keep
their order; a message groups them by channel.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Hashable, Iterable, Sequence
from fnmatch import translate
from typing import Generic, TypeVar

import orjson
from websockets.frames import Frame as WireFrame
from websockets.frames import Opcode

from streamer.records import Batch, Envelope

__all__ = ["Frame", "Route", "Router", "Subscription"]

C = TypeVar("C", bound=Hashable)

_WILDCARDS = frozenset("*?[")


class Frame:
    """One outgoing message, shared by every client that gets it. Its WebSocket wire form (a
    text frame, or a binary frame of the gzipped message) is encoded at most once, whoever
    sends it. ``size`` is what it counts against a client's byte limit."""

    __slots__ = ("_gzip", "_wire", "_wire_gzip", "data", "size")

    #: Whether it can be written as soon as it is queued (history that is still being
    #: fetched cannot).
    immediate = True

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self._gzip: bytes | None = None
        self._wire: bytes | None = None
        self._wire_gzip: bytes | None = None

    @classmethod
    def json(cls, obj: object) -> Frame:
        """A frame for a small reply object."""
        return cls(orjson.dumps(obj))

    def gzipped(self) -> bytes:
        """The gzip-compressed message (computed once)."""
        if self._gzip is None:
            self._gzip = gzip.compress(self.data, compresslevel=5, mtime=0)
        return self._gzip

    def wire(self, gzipped: bool) -> bytes:
        """The whole WebSocket frame as a server sends it (unmasked, no extension): a text frame
        of the message, or a binary frame of it gzipped."""
        if gzipped:
            if self._wire_gzip is None:
                self._wire_gzip = WireFrame(Opcode.BINARY, self.gzipped()).serialize(mask=False)
            return self._wire_gzip
        if self._wire is None:
            self._wire = WireFrame(Opcode.TEXT, self.data).serialize(mask=False)
        return self._wire


class Subscription:
    """A client's channel patterns; ``None`` (never subscribed) means every channel."""

    __slots__ = ("_cache", "_covered", "_regex", "patterns")

    def __init__(self, patterns: Iterable[str] | None = None) -> None:
        self.patterns: set[str] | None = None if patterns is None else set(patterns)
        self._compile()

    def _compile(self) -> None:
        patterns = self.patterns
        self._regex = re.compile("|".join(map(translate, patterns))) if patterns else None
        self._cache: dict[str, bool] = {}
        self._covered: dict[str, bool] = {}

    def update(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        """Add and remove patterns."""
        patterns = set() if self.patterns is None else set(self.patterns)
        patterns.update(add)
        patterns.difference_update(remove)
        self.patterns = patterns
        self._compile()

    def covers(self, data_type: str) -> bool:
        """Whether every channel of ``data_type`` matches (``trades:*``, ``*``): then a batch's
        whole envelope goes out without looking at its channels one by one."""
        if self.patterns is None:
            return True
        covered = self._covered.get(data_type)
        if covered is None:
            everything = ("*", f"{data_type}*", f"{data_type}:*")
            covered = self._covered[data_type] = any(p in self.patterns for p in everything)
        return covered

    def may_match(self, data_type: str) -> bool:
        """Whether any channel of ``data_type`` can match (patterns start with their type)."""
        patterns = self.patterns
        if patterns is None:
            return True
        return any(p.split(":", 1)[0] in ("*", data_type) for p in patterns)

    def exact(self, data_type: str) -> set[str] | None:
        """The channels of ``data_type`` it names, if it names them all without a wildcard
        (then they can be looked up); None if a pattern for it has one."""
        patterns = self.patterns
        if patterns is None:
            return None
        named = set()
        for pattern in patterns:
            head = pattern.split(":", 1)[0]
            if head not in ("*", data_type):
                continue
            if not _WILDCARDS.isdisjoint(pattern):
                return None
            named.add(pattern)
        return named

    def wants(self, key: str) -> bool:
        """Whether channel ``key`` matches."""
        if self.patterns is None:
            return True
        hit = self._cache.get(key)
        if hit is None:
            hit = self._regex is not None and self._regex.match(key) is not None
            if len(self._cache) < 100_000:
                self._cache[key] = hit
        return hit


class Route(Generic[C]):
    """The clients that share one subscription (patterns and message form)."""

    __slots__ = ("clients", "per_channel", "subscription")

    def __init__(self, subscription: Subscription, per_channel: bool) -> None:
        self.subscription = subscription
        self.per_channel = per_channel
        self.clients: dict[C, None] = {}  # insertion-ordered set


RouteKey = tuple[frozenset[str] | None, bool]


class Router(Generic[C]):
    """Clients by subscription; :meth:`route` says who gets which frames of a batch."""

    def __init__(self) -> None:
        self._routes: dict[RouteKey, Route[C]] = {}
        self._key: dict[C, RouteKey] = {}
        # Per data type, built on first use after a change: routes that take every channel,
        # routes that name channels (channel -> routes), routes matched channel by channel.
        self._plans: dict[str, tuple[list[Route[C]], dict[str, list[Route[C]]], list[Route[C]]]]
        self._plans = {}

    def __len__(self) -> int:
        return len(self._key)

    @property
    def routes(self) -> int:
        """How many distinct subscriptions the clients have."""
        return len(self._routes)

    def set(self, client: C, patterns: Iterable[str] | None, per_channel: bool = False) -> None:
        """Give ``client`` these patterns (None: every channel; empty: none) and form."""
        key: RouteKey = (None if patterns is None else frozenset(patterns), per_channel)
        if self._key.get(client) == key:
            return
        self.remove(client)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = Route(Subscription(key[0]), per_channel)
        route.clients[client] = None
        self._key[client] = key
        self._plans = {}

    def remove(self, client: C) -> None:
        """Forget ``client`` (nothing if unknown)."""
        key = self._key.pop(client, None)
        if key is None:
            return
        route = self._routes[key]
        del route.clients[client]
        if not route.clients:
            del self._routes[key]
        self._plans = {}

    def _plan(
        self, data_type: str
    ) -> tuple[list[Route[C]], dict[str, list[Route[C]]], list[Route[C]]]:
        plan = self._plans.get(data_type)
        if plan is None:
            whole: list[Route[C]] = []
            named: dict[str, list[Route[C]]] = {}
            matched: list[Route[C]] = []
            for route in self._routes.values():
                subscription = route.subscription
                if subscription.covers(data_type):
                    whole.append(route)
                elif subscription.may_match(data_type):
                    channels = subscription.exact(data_type)
                    if channels is None:
                        matched.append(route)
                    else:
                        for channel in channels:
                            named.setdefault(channel, []).append(route)
            plan = self._plans[data_type] = (whole, named, matched)
        return plan

    def route(self, batch: Batch) -> list[tuple[Route[C], Sequence[Frame]]]:
        """Per envelope of ``batch``, in order: each route that wants some of it and the frames
        its clients get. Frames with the same bytes are the same object."""
        out: list[tuple[Route[C], Sequence[Frame]]] = []
        for envelope in batch:
            whole, named, matched = self._plan(envelope.data_type)
            full: list[Frame] = []
            if whole:
                full.append(Frame(envelope.to_json()))
                out.extend((route, full) for route in whole)
            if not named and not matched:
                continue
            groups = envelope.groups()
            chosen: dict[Route[C], list[str]] = {}
            if named:
                if len(named) < len(groups):
                    for channel, routes in named.items():
                        if channel in groups:
                            for route in routes:
                                chosen.setdefault(route, []).append(channel)
                else:
                    for channel in groups:
                        for route in named.get(channel, ()):
                            chosen.setdefault(route, []).append(channel)
            for route in matched:
                wants = route.subscription.wants
                channels = [channel for channel in groups if wants(channel)]
                if channels:
                    chosen[route] = channels
            if chosen:
                out.extend(self._frames(envelope, groups, chosen, full))
        return out

    @staticmethod
    def _frames(
        envelope: Envelope,
        groups: dict[str, list[bytes]],
        chosen: dict[Route[C], list[str]],
        full: list[Frame],
    ) -> list[tuple[Route[C], Sequence[Frame]]]:
        out: list[tuple[Route[C], Sequence[Frame]]] = []
        shared: dict[tuple[str, ...], Frame] = {}
        per_channel: dict[str, Frame] = {}
        for route, channels in chosen.items():
            if len(channels) == len(groups):
                if not full:
                    full.append(Frame(envelope.to_json()))
                out.append((route, full))
            elif route.per_channel:
                by_channel = envelope.by_channel()
                frames = []
                for channel in channels:
                    frame = per_channel.get(channel)
                    if frame is None:
                        frame = per_channel[channel] = Frame(by_channel[channel])
                    frames.append(frame)
                out.append((route, frames))
            else:
                key = tuple(channels)
                frame = shared.get(key)
                if frame is None:
                    lines = [line for channel in channels for line in groups[channel]]
                    frame = shared[key] = Frame(envelope.wrap(lines))
                out.append((route, [frame]))
        return out
