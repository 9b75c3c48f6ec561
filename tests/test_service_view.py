"""The protocol /health, /metrics and /v1 read the service through."""

from __future__ import annotations

from streamer.service import Service
from streamer.service_view import ServiceView
from tests.conftest import make_settings


def test_the_service_is_a_service_view() -> None:
    """mypy checks the assignment (the protocol and the service agree); at run time the
    attributes the renderers read are there before start-up."""
    view: ServiceView = Service(make_settings(), install_signal_handlers=False)
    assert not view.stopping
    assert view.pipelines == {}
    assert view.broadcaster is None
    assert not view.ready.is_set()
