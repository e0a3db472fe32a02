"""Fault: the apiserver is SIGKILLed in the middle of a burst of creates, and started again.

Given an informer watching the namespace and 64 clients creating 240 pods
(named, so a retry can never make a second one), when the apiserver is killed
once a third of them are acknowledged and a new one starts on the same port,
then every pod whose create was acknowledged exists with the uid the client
was given, each name exists exactly once, and the informer's cache (which had
to reconnect its watch) ends equal to a fresh list.
"""

from __future__ import annotations

import asyncio
import time

from bench import hollow
from client import Client, Informer
from proto import core_pb2
from tests.faults.support import (
    Acknowledged,
    FaultControlPlane,
    background,
    create_until_acknowledged,
    eventually,
    lost_and_duplicated,
    report,
    until_true,
)

PODS = 240
BOUND = 30.0  # seconds from the kill until every create is acknowledged and the cache agrees


async def test_sigkill_apiserver_during_a_burst_of_creates(fault_plane: FaultControlPlane, client: Client,
                                                           namespace: str) -> None:
    informer = Informer(client, core_pb2.Pod, namespace=namespace)
    acked = Acknowledged({})
    async with background(informer.run()):
        await informer.wait_synced()
        gate = asyncio.Semaphore(64)
        deadline = time.monotonic() + 60

        async def create(i: int) -> None:
            async with gate:
                await create_until_acknowledged(client, hollow.pod(f"p{i:03}", namespace), acked, deadline=deadline)

        burst = asyncio.gather(*(create(i) for i in range(PODS)))
        await until_true(lambda: len(acked.uids) >= PODS // 3, "a third of the creates acknowledged", 30)
        fault_plane.kill_apiserver()  # SIGKILL: in-flight calls get no answer
        killed_at, started = len(acked.uids), time.monotonic()
        fault_plane.start_apiserver()  # as a supervisor would, on the same port
        await burst

        async def cache_agrees() -> bool:
            listed = (await client.list(core_pb2.Pod, namespace)).items
            cached = {p.metadata.name: p.metadata.resource_version for p in informer.store.list()}
            return cached == {p.metadata.name: p.metadata.resource_version for p in listed}

        await eventually(cache_agrees, "the informer's cache to equal a fresh list", timeout=BOUND)
        converged = time.monotonic() - started

    assert killed_at < PODS, "the burst finished before the kill: nothing was tested"
    assert acked.retried > 0, "no create saw the apiserver down: the kill missed the burst"
    stored = (await client.list(core_pb2.Pod, namespace)).items
    lost, duplicated = lost_and_duplicated(acked, stored, PODS)
    print(f"\n  apiserver kill: {killed_at} acknowledged before the kill, {acked.retried} attempts retried, "
          f"{acked.answered_exists} retries found their create committed")
    report("apiserver-sigkill", checked=len(acked.uids), lost=lost, duplicated=duplicated,
           converged=converged, bound=BOUND)
