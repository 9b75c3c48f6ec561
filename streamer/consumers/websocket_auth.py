"""Authentication for the WebSocket server: credentials, header parsing, brute-force throttle.

Credentials come from ``STREAMER_WSS_AUTH_USER`` + ``STREAMER_WSS_AUTH_KEY`` (one user, as
klines-streamer) and/or ``STREAMER_WSS_USERS=user:key,user2:key2``. Keys are compared in constant
time, over every configured user, so timing reveals neither keys nor user names.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

from websockets.exceptions import InvalidHeader
from websockets.headers import parse_authorization_basic

from streamer.settings import ConfigError, Settings

__all__ = ["AuthThrottle", "Credentials"]

_MISSING = (
    "the websocket consumer needs credentials: set STREAMER_WSS_AUTH_USER and "
    "STREAMER_WSS_AUTH_KEY (or STREAMER_WSS_USERS=user:key,...), or run without authentication "
    "with STREAMER_WSS_AUTH_DISABLED=true"
)


class Credentials:
    """Who may connect. ``check*`` return the user name, or None."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = [(user.encode(), key.encode()) for user, key in users.items()]

    @property
    def users(self) -> list[str]:
        """Configured user names."""
        return [user.decode() for user, _ in self._users]

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
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
    """Slows repeated authentication failures from one address down.

    The first ``free`` failures within ``window`` seconds cost nothing; after that every new
    attempt from that address waits ``base * 2**(failures - free)`` seconds, at most
    ``max_delay``. A success clears the address. At most ``max_addresses`` are remembered.
    """

    def __init__(
        self,
        free: int = 3,
        base: float = 0.5,
        max_delay: float = 10.0,
        window: float = 300.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.base = base
        self.max_delay = max_delay
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (count, last failure)

    def delay(self, address: str) -> float:
        """Seconds the next attempt from ``address`` must wait."""
        entry = self._failures.get(address)
        if entry is None:
            return 0.0
        count, last = entry
        if self._clock() - last > self.window:
            del self._failures[address]
            return 0.0
        if count < self.free:
            return 0.0
        return float(min(self.max_delay, self.base * 2 ** (count - self.free)))

    def failed(self, address: str) -> None:
        """Count one failure from ``address``."""
        count, _ = self._failures.pop(address, (0, 0.0))
        if len(self._failures) >= self.max_addresses:
            # Forget the address that failed longest ago (dicts keep insertion order).
            del self._failures[next(iter(self._failures))]
        self._failures[address] = (count + 1, self._clock())

    def succeeded(self, address: str) -> None:
        """Forget ``address``'s failures."""
        self._failures.pop(address, None)
