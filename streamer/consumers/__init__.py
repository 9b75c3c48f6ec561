"""Consumers: where published events go. See :mod:`streamer.consumers.base` to write one."""

from streamer.consumers.base import BaseConsumer
from streamer.consumers.manager import ENTRY_POINT_GROUP, ConsumerManager

__all__ = ["ENTRY_POINT_GROUP", "BaseConsumer", "ConsumerManager"]
