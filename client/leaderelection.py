"""Leader election through a Lease: one copy of a component acts, the others stand by.

Two active controller managers would fight (each creating the pods the other
just created), so every copy first tries to hold the Lease
`kube-system/flotilla-controller-manager`, as kube-controller-manager does with
client-go's leaderelection. The holder renews `renewTime` every retry period; a
standby takes the Lease over only when it has not been renewed for a whole
lease duration. Every write carries the resourceVersion it read, so two
contenders never both win: the loser gets a Conflict.

A leader that cannot renew within the lease duration must stop acting at once
(another copy may already be leading): `run` returns and the caller exits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from client import Client
from proto import coordination_pb2
from proto.errors import AlreadyExists, ApiError, Conflict, NotFound

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-system"


@dataclass
class LeaderElectionConfig:
    name: str
    identity: str
    namespace: str = LEASE_NAMESPACE
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class LeaderElector:
    """Acquire, then keep renewing; `run(lead)` runs `lead()` only while leading."""

    def __init__(self, client: Client, config: LeaderElectionConfig) -> None:
        self.client = client
        self.config = config
        self._observed: tuple[str, float] = ("", 0.0)  # (renewTime seen, local time we saw it change)

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Block until leading, run `lead` while the Lease is held; return when it is lost."""
        cfg = self.config
        while True:
            if await self._try_acquire_or_renew():
                break
            await asyncio.sleep(cfg.retry_period)
        log.info("%s: became leader of %s/%s", cfg.identity, cfg.namespace, cfg.name)
        leading = asyncio.create_task(lead(), name="leading")
        try:
            last_renew = time.monotonic()
            while not leading.done():
                await asyncio.sleep(cfg.retry_period)
                if await self._try_acquire_or_renew():
                    last_renew = time.monotonic()
                elif time.monotonic() - last_renew > cfg.renew_deadline:
                    log.error("%s: could not renew the lease within %.0fs: stepping down",
                              cfg.identity, cfg.renew_deadline)
                    return
            leading.result()  # a controller crash surfaces here
        finally:
            leading.cancel()

    async def _try_acquire_or_renew(self) -> bool:
        cfg = self.config
        try:
            lease = await self.client.get(coordination_pb2.Lease, cfg.name, cfg.namespace)
        except NotFound:
            lease = coordination_pb2.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
            lease.metadata.name, lease.metadata.namespace = cfg.name, cfg.namespace
            self._stamp(lease, transitions=0, acquired=True)
            try:
                await self.client.create(lease)
                return True
            except (AlreadyExists, ApiError) as err:
                log.debug("lease create failed: %s", err)
                return False
        except ApiError as err:
            log.warning("lease read failed: %s", err)
            return False
        spec = lease.spec
        holder = spec.holder_identity
        renew = spec.renew_time.ToJsonString() if spec.HasField("renew_time") else ""
        # Expiry is judged by *our* clock from when we last saw renewTime change, so
        # clock skew between hosts cannot make a live leader look dead.
        if renew != self._observed[0]:
            self._observed = (renew, time.monotonic())
        if holder and holder != cfg.identity:
            duration = spec.lease_duration_seconds or cfg.lease_duration
            if time.monotonic() - self._observed[1] < duration:
                return False
        acquired = holder != cfg.identity
        self._stamp(lease, transitions=spec.lease_transitions + (1 if acquired and holder else 0),
                    acquired=acquired)
        try:
            await self.client.update(lease)
            return True
        except (Conflict, ApiError) as err:
            log.debug("lease update failed: %s", err)
            return False

    async def release(self) -> None:
        """Give the Lease up on a clean shutdown, so a standby takes over at once, not a lease later."""
        cfg = self.config
        try:
            lease = await self.client.get(coordination_pb2.Lease, cfg.name, cfg.namespace)
            if lease.spec.holder_identity != cfg.identity:
                return
            lease.spec.holder_identity = ""
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time.GetCurrentTime()
            await self.client.update(lease)
            log.info("%s: released the lease", cfg.identity)
        except ApiError as err:
            log.warning("%s: could not release the lease: %s", cfg.identity, err)

    def _stamp(self, lease: coordination_pb2.Lease, *, transitions: int, acquired: bool) -> None:
        spec = lease.spec
        spec.holder_identity = self.config.identity
        spec.lease_duration_seconds = max(1, round(self.config.lease_duration))
        spec.renew_time.GetCurrentTime()
        if acquired:
            spec.acquire_time.GetCurrentTime()
        spec.lease_transitions = transitions
