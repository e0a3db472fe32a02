"""Informers keep a component's cache equal to the cluster, and tell it what changed.

The store tests need no server; the rest run a real informer against the real
apiserver (and its etcd) from conftest: given pods, when they change, the cache
and the handlers follow, in order, also across a compaction and an apiserver restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from client import (
    Client,
    Informer,
    InformerFactory,
    Store,
    WorkQueue,
    enqueue,
    field_index,
    key_of,
    label_index,
    split_key,
)
from client import informer as informer_module
from controlplane.apiserver.storage import Storage
from proto import core_pb2, selectors
from proto.errors import BadRequest
from provision.processes import ApiServer, Etcd, start_apiserver

Pod = core_pb2.Pod


def make_pod(name: str, namespace: str = "default", *, labels: dict[str, str] | None = None,
             node: str = "", version: str = "") -> Pod:
    pod = Pod(api_version="v1", kind="Pod")
    pod.metadata.name = name
    pod.metadata.namespace = namespace
    pod.metadata.labels.update(labels or {})
    pod.metadata.resource_version = version
    pod.spec.containers.add(name="app", image="nginx")
    pod.spec.node_name = node
    return pod


def names(pods: list[Pod]) -> list[str]:
    return [p.metadata.name for p in pods]


class Recorder:
    """A handler that writes down what it was told, as (event, pod name).

    An update whose old and new are the same cached object is a resync.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    def _record(self, what: str, pod: Pod) -> None:
        self.events.append((what, pod.metadata.name))
        self._changed.set()

    def on_add(self, pod: Pod) -> None:
        self._record("add", pod)

    def on_update(self, old: Pod, new: Pod) -> None:
        self._record("resync" if old is new else "update", new)

    def on_delete(self, pod: Pod) -> None:
        self._record("delete", pod)

    def attach(self, informer: Informer[Pod]) -> Recorder:
        informer.add_handler(self.on_add, self.on_update, self.on_delete)
        return self

    async def wait_for(self, count: int) -> list[tuple[str, str]]:
        """The events once there are `count` of them (wrap in asyncio.wait_for)."""
        while len(self.events) < count:
            self._changed.clear()
            await self._changed.wait()
        return self.events


@asynccontextmanager
async def running(informer: Informer[Pod]) -> AsyncIterator[Informer[Pod]]:
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 2)
        yield informer
    finally:
        informer.stop()
        await task


# ---------------------------------------------------------------- keys and the store


def test_keys_are_namespace_slash_name_or_just_name() -> None:
    node = core_pb2.Node()
    node.metadata.name = "worker-1"
    assert key_of(make_pod("web", "prod")) == "prod/web"
    assert key_of(node) == "worker-1"
    assert split_key("prod/web") == ("prod", "web")
    assert split_key("worker-1") == ("", "worker-1")
    with pytest.raises(ValueError):
        split_key("a/b/c")


def test_store_indexes_follow_updates_and_deletes() -> None:
    store: Store[Pod] = Store()
    store.add_index("spec.nodeName", field_index("spec.nodeName"))
    store.put(make_pod("a", node="n1"))
    store.put(make_pod("b", node="n1"))
    store.put(make_pod("c", "other", node="n2"))
    assert names(store.list_by_index("spec.nodeName", "n1")) == ["a", "b"]

    store.put(make_pod("b", node="n2"))  # moved: must leave n1's bucket
    store.delete("other/c")
    assert names(store.list_by_index("spec.nodeName", "n1")) == ["a"]
    assert names(store.list_by_index("spec.nodeName", "n2")) == ["b"]
    assert store.index_values("spec.nodeName") == ["n1", "n2"]
    assert store.list_by_namespace("other") == []
    assert store.get_by_name("default", "b") is store.get("default/b")
    with pytest.raises(KeyError):
        store.list_by_index("spec.schedulerName", "x")


def test_an_index_added_late_files_existing_objects_and_names_are_unique() -> None:
    store: Store[Pod] = Store()
    store.put(make_pod("a", labels={"app": "web"}))
    store.put(make_pod("b", labels={"app": "db"}))
    store.put(make_pod("c"))
    store.add_index("app", label_index("app"))
    store.add_index("app", label_index("app"))  # a second component sharing the informer
    assert names(store.list_by_index("app", "web")) == ["a"]
    assert store.index_values("app") == ["db", "web"]  # c has no app label: not indexed
    with pytest.raises(ValueError):
        store.add_index("app", label_index("tier"))


def test_select_by_label_selector_within_a_namespace() -> None:
    store: Store[Pod] = Store()
    store.put(make_pod("a", "prod", labels={"app": "web", "tier": "front"}))
    store.put(make_pod("b", "prod", labels={"app": "db"}))
    store.put(make_pod("c", "dev", labels={"app": "web"}))
    web = selectors.parse_label_selector("app=web")
    assert sorted(key_of(p) for p in store.select(web)) == ["dev/c", "prod/a"]
    assert [key_of(p) for p in store.select(web, "prod")] == ["prod/a"]
    assert len(store.select(selectors.LabelSelector(), "prod")) == 2


def test_replace_reports_only_what_changed() -> None:
    store: Store[Pod] = Store()
    for name, version in [("kept", "5"), ("changed", "6"), ("gone", "7")]:
        store.put(make_pod(name, version=version))
    changes = store.replace([make_pod("kept", version="5"), make_pod("changed", version="9"),
                             make_pod("new", version="10")])
    told = [(c.old.metadata.name if c.old else None, c.new.metadata.name if c.new else None) for c in changes]
    assert told == [("gone", None), ("changed", "changed"), (None, "new")]
    assert sorted(store.list_keys()) == ["default/changed", "default/kept", "default/new"]


def test_the_cache_names_stay_importable_from_the_informer_module() -> None:
    # The Store moved to client/store.py; components importing it from client.informer keep working.
    from client import store

    for name in ("Store", "key_of", "split_key", "label_index", "field_index"):
        assert getattr(informer_module, name) is getattr(store, name)
    assert informer_module.Store is Store and store.label_index("app") is label_index("app")


async def test_the_factory_shares_one_informer_per_resource_and_selector() -> None:
    async with Client("127.0.0.1:1") as client:
        factory = InformerFactory(client)
        pods = factory.informer(Pod, "prod")
        assert factory.informer(Pod, "prod") is pods
        assert factory.informer(Pod, "prod", label_selector="app=web") is not pods
        assert factory.informer(Pod, "dev") is not pods
        # Nodes are cluster-scoped: a namespace changes nothing.
        assert factory.informer(core_pb2.Node, "prod") is factory.informer(core_pb2.Node)


# ---------------------------------------------------------------- against the apiserver


async def test_informer_lists_existing_pods_then_follows_changes_in_order(
        client: Client, namespace: str) -> None:
    created = {name: await client.create(make_pod(name, namespace)) for name in ["a", "b"]}
    informer = Informer(client, Pod, namespace=namespace)
    recorder = Recorder().attach(informer)
    async with running(informer):
        assert sorted(informer.store.list_keys()) == [f"{namespace}/a", f"{namespace}/b"]
        assert sorted(recorder.events) == [("add", "a"), ("add", "b")]
        recorder.events.clear()

        await client.create(make_pod("c", namespace))
        relabelled = Pod()
        relabelled.CopyFrom(created["a"])
        relabelled.metadata.labels["version"] = "2"
        await client.update(relabelled)
        await client.delete(Pod, "b", namespace)

        assert await asyncio.wait_for(recorder.wait_for(3), 2) == [
            ("add", "c"), ("update", "a"), ("delete", "b")]
        cached = informer.store.get_by_name(namespace, "a")
        assert cached is not None and cached.metadata.labels["version"] == "2"
        assert informer.store.get_by_name(namespace, "b") is None


async def test_pods_indexed_by_node_name_move_when_bound(client: Client, namespace: str) -> None:
    for name in ["a", "b", "c"]:
        await client.create(make_pod(name, namespace))
    informer = Informer(client, Pod, namespace=namespace)
    informer.store.add_index("spec.nodeName", field_index("spec.nodeName"))
    recorder = Recorder().attach(informer)
    async with running(informer):
        assert len(informer.store.list_by_index("spec.nodeName", "")) == 3
        for name in ["a", "b"]:
            pod = informer.store.get_by_name(namespace, name)
            assert pod is not None
            await client.bind(pod, "node-1")
        # Handlers run after the store changed: once told of both binds, the index shows them.
        await asyncio.wait_for(recorder.wait_for(5), 2)
        assert names(informer.store.list_by_index("spec.nodeName", "node-1")) == ["a", "b"]
        assert names(informer.store.list_by_index("spec.nodeName", "")) == ["c"]


async def test_a_paginated_list_fills_the_cache(
        client: Client, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(informer_module, "PAGE_SIZE", 2)
    for i in range(5):
        await client.create(make_pod(f"p{i}", namespace))
    async with running(Informer(client, Pod, namespace=namespace)) as informer:
        assert len(informer.store) == 5


async def test_enqueue_puts_keys_of_changed_objects_on_the_work_queue(
        client: Client, namespace: str) -> None:
    await client.create(make_pod("a", namespace))
    factory = InformerFactory(client)
    informer = factory.informer(Pod, namespace)
    queue: WorkQueue[str] = WorkQueue("pods")
    enqueue(informer, queue)
    factory.start()
    try:
        await asyncio.wait_for(factory.wait_for_cache_sync(), 2)
        assert await asyncio.wait_for(queue.get(), 1) == f"{namespace}/a"
        queue.done(f"{namespace}/a")
        await client.create(make_pod("b", namespace))
        assert await asyncio.wait_for(queue.get(), 2) == f"{namespace}/b"
    finally:
        factory.stop()


async def test_a_late_async_handler_is_told_of_every_cached_object(client: Client, namespace: str) -> None:
    for name in ["a", "b"]:
        await client.create(make_pod(name, namespace))
    seen: list[str] = []

    async def on_add(pod: Pod) -> None:
        await asyncio.sleep(0)
        seen.append(pod.metadata.name)

    async with running(Informer(client, Pod, namespace=namespace)) as informer:
        informer.add_handler(on_add=on_add)
        assert not informer.has_synced  # synced means every handler has been told, too
        await asyncio.wait_for(informer.wait_synced(), 1)
        assert sorted(seen) == ["a", "b"]


async def test_resync_hands_every_object_to_on_update_again(client: Client, namespace: str) -> None:
    await client.create(make_pod("a", namespace))
    informer = Informer(client, Pod, namespace=namespace, resync_period=0.05)
    recorder = Recorder().attach(informer)
    async with running(informer):
        events = await asyncio.wait_for(recorder.wait_for(3), 1)
    assert events[:3] == [("add", "a"), ("resync", "a"), ("resync", "a")]


async def test_a_bad_selector_fails_the_informer_instead_of_hanging(client: Client, namespace: str) -> None:
    informer = Informer(client, Pod, namespace=namespace, field_selector="spec.nodeName")
    task = asyncio.create_task(informer.run())
    try:
        with pytest.raises(BadRequest):
            await asyncio.wait_for(informer.wait_synced(), 2)
        with pytest.raises(BadRequest):
            await task
    finally:
        informer.stop()


async def test_after_compaction_a_relist_tells_handlers_what_they_missed(
        client: Client, namespace: str, etcd: Etcd) -> None:
    for name in ["a", "b", "c"]:
        await client.create(make_pod(name, namespace))
    informer = Informer(client, Pod, namespace=namespace)
    recorder = Recorder().attach(informer)
    async with running(informer):
        pass
    recorder.events.clear()

    # While the informer is away: changes, then etcd forgets the history between.
    await client.create(make_pod("d", namespace))
    c = await client.get(Pod, "c", namespace)
    c.metadata.labels["changed"] = "yes"
    await client.update(c)
    await client.delete(Pod, "b", namespace)
    storage = Storage(etcd.url)
    await storage.connect()
    try:
        await storage.compact(await storage.revision())
    finally:
        await storage.close()

    async with running(informer):
        await asyncio.wait_for(recorder.wait_for(3), 2)
    # Watch order would be add d, update c, delete b: this order is the relist's diff.
    assert recorder.events == [("delete", "b"), ("update", "c"), ("add", "d")]
    assert sorted(informer.store.list_keys()) == [f"{namespace}/{n}" for n in ["a", "c", "d"]]


@pytest.fixture
def own_apiserver(etcd: Etcd, tmp_path: Path) -> Iterator[ApiServer]:
    """A private apiserver on the shared etcd, for tests that kill it; it sends bookmarks after 50 ms."""
    server = start_apiserver(etcd.url, tmp_path, extra=BOOKMARKS)
    yield server
    server.process.stop()


BOOKMARKS = ["--bookmark-interval", "0.05"]


async def test_bookmarks_advance_the_version_past_changes_the_informer_does_not_select(
        client: Client, namespace: str, own_apiserver: ApiServer) -> None:
    async with Client(own_apiserver.address) as own_client:
        informer = Informer(own_client, Pod, namespace=namespace, label_selector="app=web")
        recorder = Recorder().attach(informer)
        async with running(informer):
            other = await client.create(make_pod("db", namespace, labels={"app": "db"}))
            for _ in range(100):
                if informer.resource_version == other.metadata.resource_version:
                    break
                await asyncio.sleep(0.01)
            # A restart now resumes after the db pod's revision, not before it.
            assert informer.resource_version == other.metadata.resource_version
        assert recorder.events == []


async def test_the_watch_resumes_after_the_apiserver_restarts(
        client: Client, namespace: str, own_apiserver: ApiServer, etcd: Etcd, tmp_path: Path) -> None:
    async with Client(own_apiserver.address) as own_client:
        informer = Informer(own_client, Pod, namespace=namespace)
        recorder = Recorder().attach(informer)
        async with running(informer):
            own_apiserver.process.kill()
            await client.create(make_pod("while-down", namespace))
            port = int(own_apiserver.address.rpartition(":")[2])
            # Swapped into the fixture's object, so its teardown stops the new process.
            own_apiserver.process = start_apiserver(etcd.url, tmp_path, port=port, extra=BOOKMARKS).process
            assert await asyncio.wait_for(recorder.wait_for(1), 3) == [("add", "while-down")]
