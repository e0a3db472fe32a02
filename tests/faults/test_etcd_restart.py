"""Fault: etcd is SIGKILLed under a burst of creates and restarted on the same data directory.

Given 60 pods already stored, an informer watching them and 32 clients
creating 180 more, when etcd is killed mid-burst, left down for a second and
started again on its data directory, then the apiserver (which kept running)
serves again without a restart, every acknowledged create is stored with its
uid, nothing is stored twice, the informer's watch recovers (it sees a write
made after the restart) and its cache ends equal to a fresh list. A second
informer, stopped before the kill and started again after etcd compacted its
revision away, gets "too old" and relists to the same contents.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import pytest

from bench import hollow
from client import Client, Informer
from proto import core_pb2
from proto.errors import Gone
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

BEFORE, BURST = 60, 180
OUTAGE = 1.0  # seconds etcd stays down
BOUND = 30.0  # seconds from the kill until everything is stored and the cache agrees


async def test_etcd_sigkill_and_restart_on_the_same_data(fault_plane: FaultControlPlane, apiserver: object,
                                                         namespace: str) -> None:
    # A short per-call timeout: a call stuck on a dead etcd is retried rather than waited out.
    async with Client(fault_plane.address, timeout=5.0) as client:
        acked = Acknowledged({})
        deadline = time.monotonic() + 60
        for i in range(BEFORE):
            await create_until_acknowledged(client, hollow.pod(f"before-{i:02}", namespace), acked, deadline=deadline)
        informer = Informer(client, core_pb2.Pod, namespace=namespace)
        # A second informer is stopped before the kill and started again only once etcd has compacted
        # its revision away: it must get "too old" and relist.
        behind = Informer(client, core_pb2.Pod, namespace=namespace)
        async with background(informer.run()), background(behind.run()) as behind_run:
            await informer.wait_synced()
            await behind.wait_synced()
            gate = asyncio.Semaphore(32)

            async def create(i: int) -> None:
                async with gate:
                    await create_until_acknowledged(client, hollow.pod(f"burst-{i:03}", namespace), acked,
                                                    deadline=deadline)

            burst = asyncio.gather(*(create(i) for i in range(BURST)))
            await until_true(lambda: len(acked.uids) >= BEFORE + BURST // 3, "a third of the burst stored", 30)
            behind.stop()
            await behind_run
            fault_plane.kill_etcd()
            killed_at, started = len(acked.uids), time.monotonic()
            await asyncio.sleep(OUTAGE)
            fault_plane.start_etcd()
            await burst
            # A write after the restart must reach the cache through the (re-established) watch.
            await create_until_acknowledged(client, hollow.pod("after", namespace), acked, deadline=deadline)
            await eventually(lambda: cache_agrees(client, informer, namespace),
                             "the informer's cache to equal a fresh list", timeout=BOUND)
            converged = time.monotonic() - started

        compact(fault_plane.etcd_url, int((await client.list(core_pb2.Pod, namespace)).resource_version))
        with pytest.raises(Gone):
            async for _ in client.watch(core_pb2.Pod, namespace, resource_version=behind.resource_version):
                break
        async with background(behind.run()):
            await eventually(lambda: cache_agrees(client, behind, namespace),
                             "the stopped informer to relist after compaction", timeout=BOUND)

        assert killed_at < BEFORE + BURST, "the burst finished before the kill: nothing was tested"
        assert fault_plane.apiserver is not None and fault_plane.apiserver.process.alive(), \
            "the apiserver died with etcd"
        stored = (await client.list(core_pb2.Pod, namespace)).items
    lost, duplicated = lost_and_duplicated(acked, stored, BEFORE + BURST + 1)
    print(f"\n  etcd restart: {killed_at} acknowledged before the kill, {acked.retried} attempts retried, "
          f"{acked.answered_exists} retries found their create committed")
    report("etcd-restart", checked=len(acked.uids), lost=lost, duplicated=duplicated, converged=converged,
           bound=BOUND)


async def cache_agrees(client: Client, informer: Informer[core_pb2.Pod], namespace: str) -> bool:
    """The informer holds exactly what a fresh list holds, at the same versions, "after" included."""
    listed = (await client.list(core_pb2.Pod, namespace)).items
    cached = {p.metadata.name: p.metadata.resource_version for p in informer.store.list()}
    return "after" in cached and cached == {p.metadata.name: p.metadata.resource_version for p in listed}


def compact(etcd_url: str, revision: int) -> None:
    """Drop etcd's history before `revision`, as the apiserver's compactor would after five minutes."""
    subprocess.run(["etcdctl", "--endpoints", etcd_url, "compact", str(revision)], check=True,
                   capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})
