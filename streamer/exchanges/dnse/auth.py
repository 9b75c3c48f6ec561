"""DNSE's WebSocket handshake, as values: the welcome, the signed ``auth`` message, the answer.

DNSE greets a new connection with ``{"action": "welcome"}``; the client answers ``{"action":
"auth", "api_key", "timestamp" (seconds), "nonce" (unique per request), "signature"}`` where the
signature is the lowercase hex HMAC-SHA256 of ``{api_key}:{timestamp}:{nonce}`` under the
secret; DNSE replies ``{"action": "auth_success"}`` or an error with a ``message``. Pure: the
connector does the sending, receiving and timing.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

__all__ = ["AuthRefused", "auth_message", "check_welcome", "refusal", "sign"]


class AuthRefused(Exception):
    """DNSE refused our credentials (``AUTH_FAILED``)."""


def sign(secret: str, api_key: str, timestamp: int, nonce: str) -> str:
    """DNSE's auth signature: lowercase hex HMAC-SHA256 over ``{api_key}:{timestamp}:{nonce}``."""
    message = f"{api_key}:{timestamp}:{nonce}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def check_welcome(frame: Any) -> None:
    """ConnectionError unless ``frame`` (decoded JSON) is DNSE's welcome."""
    if not isinstance(frame, dict) or frame.get("action") != "welcome":
        raise ConnectionError(f"expected welcome, got {frame!r:.200}")


def auth_message(api_key: str, secret: str, timestamp: int, nonce: str) -> dict[str, Any]:
    """The ``auth`` request for ``timestamp`` (seconds) and a unique ``nonce``."""
    return {"action": "auth", "api_key": api_key, "timestamp": timestamp, "nonce": nonce,
            "signature": sign(secret, api_key, timestamp, nonce)}  # fmt: skip


def refusal(answer: Any) -> str | None:
    """None if ``answer`` (decoded JSON) accepts the credentials, else DNSE's reason."""
    if isinstance(answer, dict) and answer.get("action") == "auth_success":
        return None
    return str(answer.get("message", answer) if isinstance(answer, dict) else answer)
