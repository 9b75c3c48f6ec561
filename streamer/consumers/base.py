"""The consumer contract: what a built-in or plugin consumer implements.

A consumer receives every batch the service publishes, in order, from its own task and its own
bounded queue, so a slow consumer only ever delays itself. Lifecycle, called by the service::

    consumer = MyConsumer(settings, "my")   # construct: no I/O
    consumer.validate()                      # check settings; raise ConfigError (exit 2)
    await consumer.setup()                   # connect, open files
    await consumer.start()                   # start background work, if any
    await consumer.consume(batch)            # for every batch, one at a time
    await consumer.stop()                    # flush and close; called once, at shutdown

Example plugin::

    from streamer.consumers import BaseConsumer
    from streamer.records import Batch

    class CountingConsumer(BaseConsumer):
        async def consume(self, batch: Batch) -> None:
            for envelope in batch:
                print(envelope.data_type, len(envelope.data))

Enable it with ``STREAMER_ENABLED_CONSUMERS=console,mypkg.sinks:CountingConsumer`` or register it
under the ``streamer.consumers`` entry-point group and use its name.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from prometheus_client.core import Metric

from streamer.logs import Fields
from streamer.records import Batch
from streamer.settings import Section, Settings

if TYPE_CHECKING:
    from streamer.history import History

__all__ = ["BaseConsumer", "ConsumerContext"]


@dataclass(frozen=True, slots=True)
class ConsumerContext:
    """What the service offers consumers besides settings: ``history``, closed bars on demand
    (:class:`streamer.history.History`). A consumer whose ``__init__`` takes a ``context``
    keyword gets it."""

    history: History | None = None


class BaseConsumer(abc.ABC):
    """Base class for consumers. Only :meth:`consume` is required.

    An exception from :meth:`consume` is logged (rate-limited) and counted, and the consumer
    keeps receiving the following batches; it never reaches the exchange connection.
    """

    #: The settings this consumer reads besides the shared :class:`Settings` (each a
    #: :class:`~streamer.settings.Section`, read with ``settings.section(...)``). They are
    #: listed in ``.env.example`` and checked for unknown names like the built-ins'.
    sections: ClassVar[tuple[type[Section], ...]] = ()

    #: Said after the count of events this consumer could not deliver at shutdown: what, if
    #: anything, makes up for them.
    undelivered_note = ""

    def __init__(
        self, settings: Settings, name: str, *, context: ConsumerContext | None = None
    ) -> None:
        self.settings = settings
        self.name = name
        self.context = context or ConsumerContext()
        # Every line names the consumer (a field of its own in JSON logs).
        self.logger = Fields(logging.getLogger(f"streamer.consumers.{name}"), {"consumer": name})

    def validate(self) -> None:  # noqa: B027 - optional hook
        """Check this consumer's settings; raise :class:`~streamer.settings.ConfigError`."""

    async def setup(self) -> None:  # noqa: B027 - optional hook
        """Acquire resources (connections, files). Runs before the exchange connects."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Start background work. Runs after :meth:`setup`."""

    @abc.abstractmethod
    async def consume(self, batch: Batch) -> None:
        """Handle one batch. Called from this consumer's own task, one batch at a time."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources. Called once, after the queue was drained."""

    def problems(self) -> list[str]:
        """What is wrong with this consumer now (``problems`` in ``/health``, which then says
        ``degraded``); a queue falling behind is noticed for every consumer alike."""
        return []

    def health(self) -> dict[str, object]:
        """Consumer-specific health details for ``/health`` (JSON values); override to add
        some."""
        return {}

    def metrics(self) -> Iterable[Metric]:
        """This consumer's own Prometheus metric families for ``/metrics``; override to add
        some. Families of the same name from several consumers are merged (samples with the
        same labels added up), so label them with ``self.name`` where it matters."""
        return ()
