"""Faults of a several-member etcd (issue 18): a member's data wiped and re-added; a snapshot restored into a
new three-member cluster.

Given a real 3-member etcd cluster (plaintext, on 127.0.0.11-13: loopback is
a /8, so each member has an address of its own and every member the same
ports, as on the masters of `kctl cluster up --masters 3`), started with the
command line the local provider gives each master (processes.etcd_argv with
a member and the cluster):

- while a client writes through another member, one member is killed and its
  data directory wiped; it is removed from the cluster and added again
  (`etcdctl member remove` / `member add`, provision/etcd_members.py) and
  starts empty with `--initial-cluster-state existing`: it catches up, is
  healthy, the member list shows three started members, and every
  acknowledged write is there when read through the re-added member;
- a snapshot of the cluster (`kctl etcd snapshot save`'s etcd_backup.save) is
  restored once per member of a *new* cluster (new names and addresses, one
  `--initial-cluster` naming them all): the new cluster has three started
  members and every key.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aetcd
import pytest

from provision import etcd_backup, etcd_members
from provision.processes import EtcdMember, Process, etcd_argv, free_port
from tests.faults.support import report

pytestmark = pytest.mark.skipif(not shutil.which("etcd") or not shutil.which("etcdctl"),
                                reason="needs etcd and etcdctl")


class EtcdCluster:
    """Members on 127.0.0.<first>.. sharing two ports; each a Process that can be killed and started again."""

    def __init__(self, base: Path, names: list[str], first: int) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.client_port, self.peer_port = free_port(), free_port()
        self.members = tuple(EtcdMember(name, f"127.0.0.{first + i}") for i, name in enumerate(names))
        self.processes: dict[str, Process] = {}

    def url(self, name: str) -> str:
        return f"http://{self.member(name).address}:{self.client_port}"

    def peer_url(self, name: str) -> str:
        return f"http://{self.member(name).address}:{self.peer_port}"

    def member(self, name: str) -> EtcdMember:
        return next(m for m in self.members if m.name == name)

    def data_dir(self, name: str) -> Path:
        return self.base / name

    @property
    def urls(self) -> list[str]:
        return [self.url(m.name) for m in self.members]

    def start(self, name: str, state: str = "new") -> None:
        argv = etcd_argv(self.data_dir(name), self.client_port, self.peer_port, member=self.member(name),
                         cluster=self.members, initial_state=state)
        proc = Process(f"etcd-{name}", argv, self.base / f"{name}.log")
        proc.start()
        self.processes[name] = proc

    def stop(self) -> None:
        for proc in self.processes.values():
            proc.kill()


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.fixture
def three(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path / "a", ["m1", "m2", "m3"], 11)
    try:
        for m in cluster.members:
            cluster.start(m.name)
        asyncio.run(_until(lambda: _all_healthy(cluster), "three healthy members"))
        yield cluster
    finally:
        cluster.stop()


async def _all_healthy(cluster: EtcdCluster) -> bool:
    return all(await asyncio.gather(*(etcd_members.healthy(u, None) for u in cluster.urls)))


def test_a_wiped_member_is_removed_added_again_and_catches_up(three: EtcdCluster) -> None:
    async def scenario() -> None:
        acked: list[bytes] = []
        stop = asyncio.Event()

        async def writer() -> None:
            async with aetcd.Client(host=three.member("m1").address, port=three.client_port) as etcd:
                i = 0
                while not stop.is_set():
                    key = f"/registry/k{i}".encode()
                    with contextlib.suppress(Exception):  # a write refused is simply not acknowledged
                        await etcd.put(key, b"v")
                        acked.append(key)
                    i += 1

        task = asyncio.create_task(writer())
        await asyncio.sleep(1)
        fault = time.monotonic()
        three.processes["m3"].kill()
        shutil.rmtree(three.data_dir("m3"))
        before = {m.name: m.id for m in await etcd_members.members(three.urls[:2], None)}
        await etcd_members.remove(three.urls[:2], None, before["m3"])
        added = await etcd_members.add(three.urls[:2], None, three.peer_url("m3"))
        assert added.status == "unstarted"
        three.start("m3", "existing")
        await _until(lambda: etcd_members.healthy(three.url("m3"), None), "m3 healthy again")
        converged = time.monotonic() - fault
        await asyncio.sleep(0.5)
        stop.set()
        await task
        members = await etcd_members.members([three.url("m3")], None)
        assert sorted(m.name for m in members) == ["m1", "m2", "m3"]
        assert {m.status for m in members} == {"started"}
        assert next(m.id for m in members if m.name == "m3") != before["m3"]  # a new member, not the old one
        async with aetcd.Client(host=three.member("m3").address, port=three.client_port) as etcd:
            stored = {kv.key for kv in (await etcd.get_prefix(b"/registry/")).kvs}
        lost = len(set(acked) - stored)
        result = report("etcd member data wiped, removed and re-added", checked=len(acked), lost=lost,
                        duplicated=0, converged=converged, bound=30)
        assert result.passed, result.line

    asyncio.run(scenario())


def test_a_snapshot_restores_into_a_new_three_member_cluster(three: EtcdCluster, tmp_path: Path) -> None:
    async def write_and_save() -> None:
        async with aetcd.Client(host=three.member("m2").address, port=three.client_port) as etcd:
            for i in range(50):
                await etcd.put(f"/registry/s{i}".encode(), str(i).encode())
        await etcd_backup.save(three.url("m2"), tmp_path / "snap.db")

    asyncio.run(write_and_save())
    three.stop()
    new = EtcdCluster(tmp_path / "b", ["n1", "n2", "n3"], 21)
    initial = ",".join(f"{m.name}={new.peer_url(m.name)}" for m in new.members)
    try:
        for m in new.members:
            etcd_backup.restore(tmp_path / "snap.db", new.data_dir(m.name), name=m.name,
                                peer_url=new.peer_url(m.name), initial_cluster=initial)
            new.start(m.name)

        async def check() -> None:
            await _until(lambda: _all_healthy(new), "the restored cluster healthy")
            members = await etcd_members.members(new.urls, None)
            assert sorted(m.name for m in members) == ["n1", "n2", "n3"]
            async with aetcd.Client(host=new.member("n3").address, port=new.client_port) as etcd:
                got = {kv.key: kv.value for kv in (await etcd.get_prefix(b"/registry/s")).kvs}
            assert got == {f"/registry/s{i}".encode(): str(i).encode() for i in range(50)}

        asyncio.run(check())
    finally:
        new.stop()


def test_the_apiserver_storage_carries_on_through_another_member(three: EtcdCluster) -> None:
    """`--etcd-servers a,b,c` (each master's apiserver, its own member first): when the member in use is
    killed, the next call that fails is Unavailable at most, and calls go on through the others."""
    from controlplane.apiserver.storage import Storage
    from proto.errors import Unavailable

    async def scenario() -> None:
        storage = Storage(",".join(three.urls))
        await storage.connect()
        try:
            await storage.create(b"/registry/test/before", b"1")
            three.processes["m1"].kill()  # the first listed: the member every call went to
            written, failed = 0, 0
            deadline = time.monotonic() + 20
            while written < 20:
                assert time.monotonic() < deadline, f"only {written} writes after m1 was killed ({failed} failed)"
                try:
                    await storage.create(f"/registry/test/after-{written}".encode(), b"2")
                    written += 1
                except Unavailable:
                    failed += 1
                    await asyncio.sleep(0.1)
            stored = await storage.get(b"/registry/test/before")
            assert stored is not None and stored.value == b"1"
            print(f"20 writes through the other members; {failed} call(s) failed while the channel moved")
        finally:
            await storage.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(("urls", "why"), [
    ("http://127.0.0.1:2379,https://127.0.0.2:2379", "one scheme"),
    ("http://etcd-1:2379,http://etcd-2:2379", "name each by its IP address, not 'etcd-1'"),
    (" , ", "no etcd URL given"),
])
def test_bad_etcd_server_lists_are_refused(urls: str, why: str) -> None:
    from controlplane.apiserver.storage import etcd_client

    with pytest.raises(ValueError, match=why):
        etcd_client(urls)
