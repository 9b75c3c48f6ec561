"""Authentication for the WebSocket server: credentials, header parsing, brute-force throttle,
the client's address behind a trusted proxy.

Credentials come from ``STREAMER_WSS_AUTH_USER`` + ``STREAMER_WSS_AUTH_KEY`` (one user, as
klines-streamer) and/or ``STREAMER_WSS_USERS=user:key,user2:key2``. Keys are compared in constant
time, over every configured user, so timing reveals neither keys nor user names.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Annotated

from pydantic import Field, SecretStr
from websockets.exceptions import InvalidHeader
from websockets.headers import parse_authorization_basic

from streamer.settings import ConfigError, Section, Unset

__all__ = ["AuthSettings", "AuthThrottle", "Credentials", "claimant", "client_address"]

_MISSING = (
    "the websocket consumer needs credentials: set STREAMER_WSS_AUTH_USER and "
    "STREAMER_WSS_AUTH_KEY (or STREAMER_WSS_USERS=user:key,...), or run without authentication "
    "with STREAMER_WSS_AUTH_DISABLED=true"
)


class AuthSettings(Section):
    """Who may connect to the WebSocket server."""

    title = "websocket-server authentication"

    wss_auth_user: Annotated[str | None, Unset] = Field(
        default=None,
        description="One user (klines-streamer) and/or several: user:key,user2:key2. Required "
        "unless disabled.",
    )
    wss_auth_key: Annotated[SecretStr | None, Unset] = None
    wss_users: Annotated[SecretStr | None, Unset] = None
    wss_auth_disabled: bool = False
    wss_auth_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300,
        description='How long a client has to send {"user": ..., "key": ...} (close code 4408 '
        "past it)",
    )  # fmt: skip


class Credentials:
    """Who may connect. ``check*`` return the user name, or None."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = [(user.encode(), key.encode()) for user, key in users.items()]

    @property
    def users(self) -> list[str]:
        """Configured user names."""
        return [user.decode() for user, _ in self._users]

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> Credentials:
        """Read and check the credential settings; :class:`ConfigError` if unusable."""
        users: dict[str, str] = {}
        if settings.wss_users is not None:
            for entry in settings.wss_users.get_secret_value().split(","):
                name, sep, secret = entry.strip().partition(":")
                if not (sep and name and secret):
                    raise ConfigError(
                        "STREAMER_WSS_USERS: each entry must be user:key, separated by commas"
                    )
                users[name] = secret
        user, key = settings.wss_auth_user, settings.wss_auth_key
        if (user is None) != (key is None):
            missing = "STREAMER_WSS_AUTH_KEY" if key is None else "STREAMER_WSS_AUTH_USER"
            raise ConfigError(f"{missing} is required with the other one: set both or neither")
        if user is not None and key is not None:
            users[user] = key.get_secret_value()
        if not users and not settings.wss_auth_disabled:
            raise ConfigError(_MISSING)
        return cls(users)

    def check(self, user: str, key: str) -> str | None:
        """The user if ``user`` and ``key`` match a configured pair."""
        user_bytes, key_bytes = user.encode(), key.encode()
        found = None
        for known_user, known_key in self._users:
            # & not `and`: every comparison runs, whatever matched before.
            if hmac.compare_digest(known_user, user_bytes) & hmac.compare_digest(
                known_key, key_bytes
            ):
                found = known_user.decode()
        return found

    def check_key(self, key: str) -> str | None:
        """The user whose key is ``key`` (``Authorization: Bearer <key>``)."""
        key_bytes = key.encode()
        found = None
        for known_user, known_key in self._users:
            if hmac.compare_digest(known_key, key_bytes):
                found = known_user.decode()
        return found

    def check_header(self, authorization: str) -> str | None:
        """The user for an ``Authorization`` header value (Bearer or Basic), or None."""
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return self.check_key(value.strip())
        if scheme.lower() == "basic":
            try:
                user, key = parse_authorization_basic(authorization)
            except InvalidHeader:
                return None
            return self.check(user, key)
        return None


class AuthThrottle:
    """Slows repeated authentication failures down, per claimant and address.

    ``who`` is the user a client claims to be (``key:<hash>`` for a bare Bearer key, ``?`` if
    it claimed nobody). Failures are counted twice: per (who, address) and per address. The
    first ``free`` failures of a pair within ``window`` seconds cost nothing; after that each
    new attempt of that pair waits ``base * 2**(failures - free)`` seconds, at most
    ``max_delay``. The address as a whole gets ``free_per_address`` failures (a brute force
    trying many users or keys) before its attempts slow down the same way. So one client
    with a wrong password behind a shared address (a proxy, NAT) slows only itself down. A
    success clears its pair, not the address's count. At most ``max_keys`` are remembered.
    """

    def __init__(
        self,
        free: int = 3,
        base: float = 0.5,
        max_delay: float = 10.0,
        window: float = 300.0,
        free_per_address: int = 200,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.base = base
        self.max_delay = max_delay
        self.window = window
        self.free_per_address = free_per_address
        self.max_keys = max_keys
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (count, last failure)

    def delay(self, address: str, who: str = "?") -> float:
        """Seconds the next attempt of ``who`` from ``address`` must wait."""
        return max(
            self._delay(f"{who}@{address}", self.free),
            self._delay(f"@{address}", self.free_per_address),
        )

    def _delay(self, key: str, free: int) -> float:
        entry = self._failures.get(key)
        if entry is None:
            return 0.0
        count, last = entry
        if self._clock() - last > self.window:
            del self._failures[key]
            return 0.0
        if count < free:
            return 0.0
        return float(min(self.max_delay, self.base * 2 ** min(64, count - free)))

    def failed(self, address: str, who: str = "?") -> None:
        """Count one failure of ``who`` from ``address``."""
        for key in (f"{who}@{address}", f"@{address}"):
            count, _ = self._failures.pop(key, (0, 0.0))
            if len(self._failures) >= self.max_keys:
                # Forget the key that failed longest ago (dicts keep insertion order).
                del self._failures[next(iter(self._failures))]
            self._failures[key] = (count + 1, self._clock())

    def succeeded(self, address: str, who: str = "?") -> None:
        """Forget the failures of ``who`` from ``address``."""
        self._failures.pop(f"{who}@{address}", None)


def claimant(authorization: str) -> str:
    """Who an ``Authorization`` header claims to be, for :class:`AuthThrottle`: the Basic user,
    a short hash of a Bearer key (never the key itself), or ``?``."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return "key:" + hashlib.sha256(value.strip().encode()).hexdigest()[:16]
    if scheme.lower() == "basic":
        try:
            return parse_authorization_basic(authorization)[0]
        except InvalidHeader:
            return "?"
    return "?"


def client_address(peer: str, headers: Mapping[str, str], trusted: frozenset[str]) -> str:
    """The client's address: ``peer``, or, when ``peer`` is a trusted proxy, the last address
    in ``X-Forwarded-For`` that is not itself a trusted proxy (``X-Real-IP`` if there is no
    such header). Addresses a client writes itself are never believed unless every hop after
    them is trusted."""
    if peer not in trusted:
        return peer
    forwarded = headers.get("X-Forwarded-For")
    if forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if hop not in trusted:
                return hop[:64]
        return peer
    real = headers.get("X-Real-IP", "").strip()
    return real[:64] if real else peer
