"""The apiserver's watch cache (controlplane/apiserver/cacher/): what a client sees of it.

Given an apiserver serving lists and watches from memory, a watch resumes from
its buffer, is told 410 Gone from beyond it (even though etcd still has that
history) or once etcd compacted it, gets bookmarks on a quiet resource; a list right after a
write — even one made through another apiserver — sees the write; selectors
work on cached objects; and the cache follows etcd through a compaction of its
own watch's history and through etcd restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from client.api import Client, WatchEvent
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.storage import Storage
from proto import core_pb2, kinds
from proto.errors import Gone
from provision.processes import ApiServer, Etcd, free_port, start_apiserver, start_etcd

Pod, ConfigMap = core_pb2.Pod, core_pb2.ConfigMap
CONFIGMAPS = kinds.resolve("configmaps")
BUFFER = 5  # the small apiserver's --watch-cache-size


def pod(name: str, namespace: str, *, labels: dict[str, str] | None = None) -> core_pb2.Pod:
    made = Pod(api_version="v1", kind="Pod")
    made.metadata.name, made.metadata.namespace = name, namespace
    made.metadata.labels.update(labels or {})
    made.spec.containers.add(name="app", image="nginx")
    return made


def config_map(name: str, namespace: str = "default", value: str = "") -> core_pb2.ConfigMap:
    made = ConfigMap(api_version="v1", kind="ConfigMap")
    made.metadata.name, made.metadata.namespace = name, namespace
    made.data["value"] = value
    return made


async def collect(events: AsyncIterator[WatchEvent[core_pb2.Pod]], count: int, *, skip_bookmarks: bool = True,
                  timeout: float = 10.0) -> list[WatchEvent[core_pb2.Pod]]:
    seen: list[WatchEvent[core_pb2.Pod]] = []

    async def run() -> None:
        async for event in events:
            if skip_bookmarks and event.type == "BOOKMARK":
                continue
            seen.append(event)
            if len(seen) == count:
                return
    await asyncio.wait_for(run(), timeout)
    return seen


def obj(event: WatchEvent[core_pb2.Pod]) -> core_pb2.Pod:
    assert event.object is not None, f"a {event.type} event without an object"
    return event.object


@pytest.fixture(scope="module")
def small_apiserver(etcd: Etcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A second apiserver on the session's etcd: a five-event buffer, bookmarks after 50 ms of quiet."""
    server = start_apiserver(etcd.url, tmp_path_factory.mktemp("small-cache"),
                             extra=["--watch-cache-size", str(BUFFER), "--bookmark-interval", "0.05"])
    yield server
    server.process.stop()


# ---------------------------------------------------------------- watches


async def test_a_watch_resumes_from_the_buffer_until_etcd_compacts_that_history(
        client: Client, namespace: str, etcd: Etcd) -> None:
    first = await client.create(pod("a", namespace))
    await client.list(Pod, namespace)  # the pods cache is running from here on, if it was not already
    await client.create(pod("b", namespace))
    a = await client.get(Pod, "a", namespace)
    a.metadata.labels["changed"] = "yes"
    await client.update(a)
    await client.delete(Pod, "b", namespace)

    events = client.watch(Pod, namespace, resource_version=first.metadata.resource_version)
    seen = await collect(events, 3)
    assert [(e.type, obj(e).metadata.name) for e in seen] == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert obj(seen[1]).metadata.labels["changed"] == "yes"

    # Once etcd has compacted that history, resuming from it is "too old", as it is without the cache.
    storage = Storage(etcd.url)
    await storage.connect()
    try:
        await storage.compact(await storage.revision())
    finally:
        await storage.close()
    with pytest.raises(Gone, match="too old resource version"):
        await collect(client.watch(Pod, namespace, resource_version=first.metadata.resource_version), 1)


async def test_a_watch_from_beyond_the_buffer_is_told_410_gone(small_apiserver: ApiServer, namespace: str) -> None:
    async with Client(small_apiserver.address) as small:
        start = (await small.list(Pod, namespace)).resource_version
        for index in range(BUFFER + 2):
            await small.create(pod(f"p{index}", namespace))
        await asyncio.sleep(0.2)  # the changes reach the cache (a list would wait for them; a watch need not)
        with pytest.raises(Gone, match="too old resource version"):
            await collect(small.watch(Pod, namespace, resource_version=start), 1)
        # From inside the buffer it resumes: the last two creations.
        pods = (await small.list(Pod, namespace)).items
        inside = pods[-3].metadata.resource_version
        seen = await collect(small.watch(Pod, namespace, resource_version=inside), 2)
        assert [obj(e).metadata.name for e in seen] == [f"p{BUFFER}", f"p{BUFFER + 1}"]


async def test_a_quiet_watch_gets_bookmarks_past_writes_to_other_resources(
        small_apiserver: ApiServer, namespace: str) -> None:
    async with Client(small_apiserver.address) as small:
        start = (await small.list(Pod, namespace)).resource_version
        other = await small.create(config_map(f"elsewhere-{uuid.uuid4().hex[:6]}", namespace))
        written = int(other.metadata.resource_version)

        async def bookmark_past_write() -> str:
            async for event in small.watch(Pod, namespace, resource_version=start, allow_bookmarks=True):
                assert event.type == "BOOKMARK", "nothing changed under pods in this namespace"
                if int(event.resource_version) >= written:
                    return event.resource_version
            raise AssertionError("the watch ended")
        assert int(await asyncio.wait_for(bookmark_past_write(), 10)) >= written


# ---------------------------------------------------------------- lists


async def test_a_list_right_after_a_write_sees_it_even_through_another_apiserver(
        client: Client, small_apiserver: ApiServer, namespace: str) -> None:
    async with Client(small_apiserver.address) as small:
        await small.list(ConfigMap, namespace)  # both caches running
        await client.list(ConfigMap, namespace)
        for index in range(20):
            writer, reader = (client, small) if index % 2 else (small, client)
            made = await writer.create(config_map(f"cm{index}", namespace, str(index)))
            listed = await reader.list(ConfigMap, namespace)
            assert f"cm{index}" in [c.metadata.name for c in listed.items]
            assert int(listed.resource_version) >= int(made.metadata.resource_version)
            made.data["value"] = "changed"
            changed = await writer.update(made)
            seen = {c.metadata.name: c for c in (await reader.list(ConfigMap, namespace)).items}
            assert seen[f"cm{index}"].data["value"] == "changed"
            assert seen[f"cm{index}"].metadata.resource_version == changed.metadata.resource_version


async def test_selectors_are_answered_from_cached_objects(client: Client, namespace: str) -> None:
    for name, app, node in [("w1", "web", "node-a"), ("w2", "web", "node-b"), ("d1", "db", "node-a"),
                            ("u1", "web", "")]:
        made = await client.create(pod(name, namespace, labels={"app": app}))
        if node:
            await client.bind(made, node)
    await client.create(pod("elsewhere", "default", labels={"app": "web"}))  # another namespace

    async def names(label_selector: str = "", field_selector: str = "") -> list[str]:
        listed = await client.list(Pod, namespace, label_selector=label_selector, field_selector=field_selector)
        return [p.metadata.name for p in listed.items]
    assert await names() == ["d1", "u1", "w1", "w2"]
    assert await names(field_selector="spec.nodeName=node-a") == ["d1", "w1"]
    assert await names(field_selector="spec.nodeName=") == ["u1"]
    assert await names(label_selector="app=web") == ["u1", "w1", "w2"]
    assert await names(label_selector="app=web", field_selector="spec.nodeName=node-a") == ["w1"]
    assert await names(label_selector="app in (db),app!=web") == ["d1"]
    assert await names(field_selector=f"metadata.namespace={namespace},spec.nodeName!=node-a") == ["u1", "w2"]
    page = await client.list(Pod, namespace, label_selector="app=web", limit=2)
    assert [p.metadata.name for p in page.items] == ["u1", "w1"] and page.continue_token
    rest = await client.list(Pod, namespace, label_selector="app=web", limit=2, continue_token=page.continue_token)
    assert [p.metadata.name for p in rest.items] == ["w2"]

    # A kubelet's watch of its node's pods sees a pod when it is bound there, and only then.
    start = (await client.list(Pod, namespace)).resource_version
    await client.bind(await client.create(pod("late", namespace)), "node-b")
    await client.bind(await client.create(pod("other", namespace)), "node-a")
    seen = await collect(client.watch(Pod, namespace, field_selector="spec.nodeName=node-b",
                                      resource_version=start), 1)
    assert (seen[0].type, obj(seen[0]).metadata.name) == ("ADDED", "late")


# ---------------------------------------------------------------- following etcd


class Proxy:
    """A TCP relay between the cache's etcd client and etcd, that a test can cut and mend."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.open = True
        self._pipes: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._pipes.update((writer, up_writer))

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def cut(self) -> None:
        self.open = False
        for pipe in self._pipes:
            pipe.close()
        self._pipes.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


async def _cached_registry(url: str, capacity: int = 100) -> Registry:
    storage = Storage(url)
    await storage.connect()
    return Registry(storage, watch_cache_size=capacity)


async def _close(registry: Registry) -> None:
    assert registry.cacher is not None
    await registry.cacher.stop()
    await registry.storage.close()


async def _eventually_listed(registry: Registry, expected: list[str], timeout: float = 20.0) -> None:
    names: list[str] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        items, _, _, _ = await registry.list(CONFIGMAPS, "default", resource_version="0")
        names = [_name(raw) for raw in items]
        if names == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the cache holds {names}, not {expected}")


def _name(raw: bytes) -> str:
    cm = ConfigMap()
    cm.ParseFromString(raw)
    return cm.metadata.name


async def test_the_cache_lists_again_when_etcd_compacted_its_own_watch_history(own_etcd: Etcd) -> None:
    writer = Registry(Storage(own_etcd.url))
    await writer.storage.connect()
    await writer.ensure_system_namespaces()
    await writer.create(CONFIGMAPS, "default", config_map("before"))
    proxy = Proxy(own_etcd.client_port)
    await proxy.start()
    cached = await _cached_registry(f"http://127.0.0.1:{proxy.port}")
    try:
        await _eventually_listed(cached, ["before"])
        assert cached.cacher is not None
        cache = cached.cacher.resource(CONFIGMAPS)
        watch = cached.watch(CONFIGMAPS, "default", str(cache.cache.revision))
        first_event = asyncio.ensure_future(watch.__anext__())
        await asyncio.sleep(0.1)

        proxy.cut()  # the cache's watch breaks, and cannot come back yet
        await writer.create(CONFIGMAPS, "default", config_map("while-away"))
        await writer.delete(CONFIGMAPS, "default", "before")
        await writer.storage.compact(await writer.storage.revision())
        proxy.open = True

        await _eventually_listed(cached, ["while-away"])
        assert cache.relists == 2  # the initial list, and the one after etcd said "compacted"
        # The client watch fed from the history the relist replaced is ended: its client watches again.
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(first_event, 5)
    finally:
        await proxy.close()
        await _close(cached)
        await writer.storage.close()


async def test_the_cache_follows_etcd_through_restarts(tmp_path: Path) -> None:
    etcd = start_etcd(tmp_path / "data", log_dir=tmp_path)
    cached = await _cached_registry(etcd.url)
    writer = Registry(Storage(etcd.url))
    try:
        await writer.storage.connect()
        await writer.ensure_system_namespaces()
        await writer.create(CONFIGMAPS, "default", config_map("first"))
        await _eventually_listed(cached, ["first"])
        assert cached.cacher is not None
        cache = cached.cacher.resource(CONFIGMAPS)
        events = cached.watch(CONFIGMAPS, "default", str(cache.cache.revision))
        next_event = asyncio.ensure_future(events.__anext__())

        # etcd restarts with its data: the cache resumes its watch, and so does the client's.
        etcd.process.stop()
        etcd = start_etcd(tmp_path / "data", client_port=etcd.client_port, peer_port=etcd.peer_port,
                          log_dir=tmp_path)
        await writer.create(CONFIGMAPS, "default", config_map("second"))
        await _eventually_listed(cached, ["first", "second"])
        event = await asyncio.wait_for(next_event, 10)
        assert (event.type, _name(event.object)) == ("ADDED", "second")
        assert cache.relists == 1

        # etcd comes back without its data (its history went backwards): the cache is rebuilt from a new list.
        etcd.process.stop()
        shutil.rmtree(tmp_path / "data")
        etcd = start_etcd(tmp_path / "data", client_port=etcd.client_port, peer_port=etcd.peer_port,
                          log_dir=tmp_path)
        await writer.ensure_system_namespaces()
        await writer.create(CONFIGMAPS, "default", config_map("reborn"))
        await _eventually_listed(cached, ["reborn"])
        assert cache.relists == 2
        await events.aclose()  # type: ignore[attr-defined]
    finally:
        await _close(cached)
        await writer.storage.close()
        etcd.process.stop()


async def test_with_the_cache_off_lists_and_watches_come_from_etcd(etcd: Etcd, tmp_path: Path,
                                                                  namespace: str) -> None:
    server = start_apiserver(etcd.url, tmp_path, extra=["--watch-cache", "false"])
    try:
        async with Client(server.address) as direct:
            first = await direct.create(pod("a", namespace))
            await direct.create(pod("b", namespace))
            listed = await direct.list(Pod, namespace)
            assert [p.metadata.name for p in listed.items] == ["a", "b"]
            seen = await collect(direct.watch(Pod, namespace, resource_version=first.metadata.resource_version), 1)
            assert (seen[0].type, obj(seen[0]).metadata.name) == ("ADDED", "b")
            await direct.delete(Pod, "b", namespace)  # history after b's creation, for etcd to compact away
            storage = Storage(etcd.url)
            await storage.connect()
            try:
                await storage.compact(await storage.revision())
            finally:
                await storage.close()
            with pytest.raises(Gone, match="too old resource version"):
                await collect(direct.watch(Pod, namespace, resource_version=first.metadata.resource_version), 1)
    finally:
        server.process.stop()


async def test_an_update_decided_on_a_stale_cached_copy_is_decided_again_on_etcds(own_etcd: Etcd) -> None:
    writer = Registry(Storage(own_etcd.url))
    await writer.storage.connect()
    await writer.ensure_system_namespaces()
    cached = await _cached_registry(own_etcd.url)
    try:
        name = f"shared-{uuid.uuid4().hex[:6]}"
        await writer.create(CONFIGMAPS, "default", config_map(name, value="1"))
        assert cached.cacher is not None
        cache = cached.cacher.resource(CONFIGMAPS)
        for _ in range(100):
            if cached.cacher.stored(CONFIGMAPS, f"/registry/configmaps/default/{name}".encode()) is not None:
                break
            await asyncio.sleep(0.05)
        await cache.stop()  # the cache keeps its copy (value 1) but no longer follows etcd

        latest = await writer.get(CONFIGMAPS, "default", name)
        latest.data["value"] = "2"  # type: ignore[attr-defined]
        latest = await writer.update(CONFIGMAPS, "default", latest)

        # Guarded by etcd's revision: the cached copy is older, the write still lands.
        mine = config_map(name, value="3")
        mine.metadata.resource_version = latest.metadata.resource_version  # type: ignore[attr-defined]
        written = await cached.update(CONFIGMAPS, "default", mine)
        assert written.data["value"] == "3"  # type: ignore[attr-defined]
        assert int(written.metadata.resource_version) > int(latest.metadata.resource_version)  # type: ignore

        # The same object as the stale copy is no no-op against etcd's.
        undone = await cached.update(CONFIGMAPS, "default", config_map(name, value="1"))
        assert (await writer.get(CONFIGMAPS, "default", name)).data["value"] == "1"  # type: ignore[attr-defined]
        assert int(undone.metadata.resource_version) > int(written.metadata.resource_version)  # type: ignore
    finally:
        await _close(cached)
        await writer.storage.close()


async def test_http_lists_honour_resource_version(client: Client, namespace: str, http_url: str) -> None:
    # "0": whatever the cache holds (client-go's first list); N: at least as new as N; junk: 400 naming it.
    import aiohttp

    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    cm.metadata.name, cm.metadata.namespace = "rv", namespace
    made = await client.create(cm)
    url = f"{http_url}/api/v1/namespaces/{namespace}/configmaps"
    async with aiohttp.ClientSession() as session:
        for version in ("0", made.metadata.resource_version):
            async with session.get(url, params={"resourceVersion": version}) as reply:
                body = await reply.json()
                assert reply.status == 200, body
                assert [i["metadata"]["name"] for i in body["items"]] == ["rv"]
                assert int(body["metadata"]["resourceVersion"]) >= int(made.metadata.resource_version)
        async with session.get(url, params={"resourceVersion": "yesterday"}) as reply:
            body = await reply.json()
            assert (reply.status, body["reason"], body["message"]) == (
                400, "BadRequest", 'invalid resource version "yesterday"')
