"""DNSE's handshake as values: welcome, the signed auth message, the answer."""

from __future__ import annotations

import pytest

from streamer.exchanges.dnse.auth import auth_message, check_welcome, refusal, sign


def test_the_signature_matches_the_published_test_vector() -> None:
    assert sign("test-secret", "test-key", 1700000000, "1700000000000000") == (
        "31a315591ef85713e9d8ca741531e1685bf31a82709d69ef064f139e502df4af"
    )


def test_the_auth_message_carries_the_key_time_nonce_and_signature() -> None:
    message = auth_message("test-key", "test-secret", 1700000000, "1700000000000000")
    assert message == {
        "action": "auth", "api_key": "test-key", "timestamp": 1700000000,
        "nonce": "1700000000000000",
        "signature": sign("test-secret", "test-key", 1700000000, "1700000000000000"),
    }  # fmt: skip
    assert "test-secret" not in str(message)


def test_only_a_welcome_opens_the_handshake() -> None:
    check_welcome({"action": "welcome"})
    frames: list[object] = [{"action": "error"}, [], None, "welcome"]
    for frame in frames:
        with pytest.raises(ConnectionError, match="expected welcome"):
            check_welcome(frame)


def test_the_answer_is_success_or_dnses_reason() -> None:
    assert refusal({"action": "auth_success"}) is None
    assert refusal({"action": "error", "message": "AUTH_FAILED"}) == "AUTH_FAILED"
    assert refusal("nonsense") == "nonsense"
