"""The event recorder every component shares (controllers, scheduler, kubelet): `kctl get events` reads what it writes.

Controllers report significant actions (SuccessfulCreate, ScalingReplicaSet,
NodeNotReady, ...) as core/v1 Events about the object involved. Recording must
never slow or fail a sync, so `event()` only queues the Event; one background
task writes them, and a full queue or a refused write (a terminating namespace)
drops the event with a debug log, as client-go's broadcaster does. Repeats of
the same (object, reason, message) within ten minutes bump `count` on the
existing Event instead of creating another, as Kubernetes' event correlator does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from google.protobuf.message import Message

from client import Client
from proto import core_pb2, kinds
from proto.errors import ApiError

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1000
AGGREGATE_SECONDS = 600
NORMAL, WARNING = "Normal", "Warning"


class EventRecorder:
    """Writes Events on behalf of `component`; call `start()` inside the event loop once."""

    def __init__(self, client: Client, component: str, *, host: str = "") -> None:
        self.client = client
        self.component = component
        self.host = host
        self._queue: asyncio.Queue[core_pb2.Event] = asyncio.Queue(QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None
        # (namespace, uid, reason, message) -> (event name, count, monotonic time of first)
        self._seen: dict[tuple[str, str, str, str], tuple[str, int, float]] = {}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="event-recorder")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def event(self, obj: Message, type_: str, reason: str, message: str) -> None:
        """Record that `reason: message` happened to `obj` (never blocks, never raises)."""
        meta: Any = getattr(obj, "metadata")  # noqa: B009
        kind = kinds.for_message(obj)
        ev = core_pb2.Event(api_version="v1", kind="Event", reason=reason, message=message, type=type_)
        # Events about cluster-scoped objects (nodes) live in "default", as in Kubernetes.
        ev.metadata.namespace = meta.namespace or "default"
        # os.urandom, not `secrets`: that imports hashlib, whose libcrypto costs every daemon ~3 MiB resident.
        ev.metadata.name = f"{meta.name}.{time.time_ns():x}{os.urandom(2).hex()}"
        ref = ev.involved_object
        ref.kind, ref.api_version, ref.name, ref.namespace, ref.uid = (
            kind.kind, kind.api_version, meta.name, meta.namespace, meta.uid)
        ev.source.component = self.component
        ev.source.host = self.host
        ev.reporting_component = self.component
        ev.first_timestamp.GetCurrentTime()
        ev.last_timestamp.CopyFrom(ev.first_timestamp)
        ev.count = 1
        try:
            self._queue.put_nowait(ev)
        except asyncio.QueueFull:
            log.debug("event queue full, dropping %s %s", reason, message)

    async def _drain(self) -> None:
        while True:
            ev = await self._queue.get()
            try:
                await self._write(ev)
            except ApiError as err:
                log.debug("could not record event %s on %s: %s", ev.reason, ev.involved_object.name, err)

    async def _write(self, ev: core_pb2.Event) -> None:
        ref = ev.involved_object
        key = (ev.metadata.namespace, ref.uid, ev.reason, ev.message)
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[2] < AGGREGATE_SECONDS:
            name, count, first = seen
            try:
                existing = await self.client.get(core_pb2.Event, name, ev.metadata.namespace)
                existing.count = count + 1
                existing.last_timestamp.CopyFrom(ev.last_timestamp)
                await self.client.update(existing)
                self._seen[key] = (name, count + 1, first)
                return
            except ApiError:
                pass  # gone or changed meanwhile: write a fresh one
        await self.client.create(ev)
        self._seen[key] = (ev.metadata.name, 1, now)
        if len(self._seen) > 10 * QUEUE_LIMIT:
            self._seen = {k: v for k, v in self._seen.items() if now - v[2] < AGGREGATE_SECONDS}
