"""The apiserver's contract, told as stories against a real etcd and apiserver process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aetcd
import pytest

from client import Client
from proto import apps_pb2, core_pb2, manifest
from proto.errors import AlreadyExists, BadRequest, Conflict, Gone, Invalid, NamespaceTerminating, NotFound, TooLarge
from provision.processes import ApiServer, Etcd, start_apiserver


def make_pod(name: str, namespace: str, **labels: str) -> core_pb2.Pod:
    pod = manifest.from_dict({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "ports": [{"containerPort": 8080}]}]},
    })
    assert isinstance(pod, core_pb2.Pod)
    return pod


async def test_create_sets_server_fields_and_defaults(client: Client, namespace: str) -> None:
    pod = await client.create(make_pod("web", namespace))
    assert pod.metadata.uid and pod.metadata.resource_version.isdigit()
    assert pod.metadata.creation_timestamp.seconds > 0
    assert pod.metadata.generation == 1
    assert pod.spec.restart_policy == "Always"
    assert pod.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert pod.status.phase == "Pending"
    again = await client.get(core_pb2.Pod, "web", namespace)
    assert again.metadata.uid == pod.metadata.uid
    assert again.metadata.resource_version == pod.metadata.resource_version
    with pytest.raises(AlreadyExists, match='pods "web" already exists'):
        await client.create(make_pod("web", namespace))


async def test_generate_name(client: Client, namespace: str) -> None:
    pod = make_pod("", namespace)
    pod.metadata.generate_name = "job-"
    first, second = await client.create(pod), await client.create(pod)
    assert first.metadata.name.startswith("job-") and len(first.metadata.name) == 9
    assert first.metadata.name != second.metadata.name


async def test_invalid_write_names_the_field_and_stores_nothing(client: Client, namespace: str) -> None:
    pod = make_pod("bad", namespace)
    pod.spec.containers[0].ports[0].container_port = 70000
    with pytest.raises(BadRequest, match=r"spec\.containers\[0\]\.ports\[0\]\.containerPort"):
        await client.create(pod)
    pod = make_pod("Bad_Name", namespace)
    with pytest.raises(Invalid, match=r"metadata\.name"):
        await client.create(pod)
    listed = await client.list(core_pb2.Pod, namespace)
    assert listed.items == []


async def test_missing_and_terminating_namespaces_refuse_writes(client: Client, namespace: str) -> None:
    with pytest.raises(NotFound, match='namespaces "no-such-ns" not found'):
        await client.create(make_pod("p", "no-such-ns"))
    await client.delete(core_pb2.Namespace, namespace)
    ns = await client.get(core_pb2.Namespace, namespace)
    assert ns.status.phase == "Terminating" and ns.metadata.HasField("deletion_timestamp")
    with pytest.raises(NamespaceTerminating, match="being terminated"):
        await client.create(make_pod("p", namespace))


async def test_system_namespaces_exist(client: Client) -> None:
    names = {ns.metadata.name for ns in (await client.list(core_pb2.Namespace)).items}
    assert {"default", "kube-system", "kube-node-lease"} <= names


async def test_concurrent_updates_from_one_stale_copy_exactly_one_wins(client: Client, namespace: str) -> None:
    stale = await client.create(make_pod("race", namespace))

    async def relabel(value: str) -> str:
        copy = core_pb2.Pod()
        copy.CopyFrom(stale)
        copy.metadata.labels["winner"] = value
        try:
            await client.update(copy)
            return "ok"
        except Conflict:
            return "conflict"

    results = await asyncio.gather(*(relabel(str(i)) for i in range(8)))
    assert results.count("ok") == 1 and results.count("conflict") == 7
    assert (await client.get(core_pb2.Pod, "race", namespace)).metadata.labels["winner"] in {str(i) for i in range(8)}


async def test_status_subresource_keeps_spec_and_status_apart(client: Client, namespace: str) -> None:
    pod = await client.create(make_pod("st", namespace))
    pod.status.phase = "Running"
    pod.spec.active_deadline_seconds = 60
    after_update = await client.update(pod)
    assert after_update.status.phase == "Pending", "Update must not change status"
    assert after_update.spec.active_deadline_seconds == 60
    after_update.status.phase = "Running"
    after_update.spec.active_deadline_seconds = 90
    after_status = await client.update_status(after_update)
    assert after_status.status.phase == "Running"
    assert after_status.spec.active_deadline_seconds == 60, "UpdateStatus must not change spec"


async def test_generation_counts_spec_changes_only(client: Client, namespace: str) -> None:
    deploy = manifest.from_dict({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}},
    })
    created = await client.create(deploy)
    assert isinstance(created, apps_pb2.Deployment) and created.metadata.generation == 1
    created.metadata.labels["team"] = "a"
    relabelled = await client.update(created)
    assert relabelled.metadata.generation == 1
    relabelled.spec.replicas = 3
    scaled = await client.update(relabelled)
    assert scaled.metadata.generation == 2
    unchanged = await client.update(scaled)
    assert unchanged.metadata.resource_version == scaled.metadata.resource_version, "a no-op update writes nothing"


async def test_bind_sets_node_name_exactly_once(client: Client, namespace: str) -> None:
    pod = await client.create(make_pod("b", namespace))
    bound = await client.bind(pod, "node-a")
    assert bound.spec.node_name == "node-a"
    assert [(c.type, c.status) for c in bound.status.conditions] == [("PodScheduled", "True")]
    with pytest.raises(Conflict, match="already assigned"):
        await client.bind(pod, "node-b")
    assert (await client.get(core_pb2.Pod, "b", namespace)).spec.node_name == "node-a"


async def test_bound_pod_deletion_is_graceful_until_grace_zero(client: Client, namespace: str) -> None:
    pod = await client.bind(await client.create(make_pod("g", namespace)), "node-a")
    terminating = await client.delete(core_pb2.Pod, "g", namespace)
    assert terminating.metadata.HasField("deletion_timestamp")
    assert terminating.metadata.deletion_grace_period_seconds == 30
    still = await client.get(core_pb2.Pod, "g", namespace)
    assert still.metadata.uid == pod.metadata.uid
    await client.delete(core_pb2.Pod, "g", namespace, grace_period_seconds=0)
    with pytest.raises(NotFound):
        await client.get(core_pb2.Pod, "g", namespace)


async def test_finalizers_hold_deletion_until_removed(client: Client, namespace: str) -> None:
    cm = manifest.from_dict({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "held", "namespace": namespace, "finalizers": ["example.com/x"]},
                             "data": {"a": "1"}})
    await client.create(cm)
    marked = await client.delete(core_pb2.ConfigMap, "held", namespace, propagation_policy="Foreground")
    assert marked.metadata.HasField("deletion_timestamp")
    assert list(marked.metadata.finalizers) == ["example.com/x", "foregroundDeletion"]
    live = await client.get(core_pb2.ConfigMap, "held", namespace)
    del live.metadata.finalizers[:]
    await client.update(live)
    with pytest.raises(NotFound):
        await client.get(core_pb2.ConfigMap, "held", namespace)


async def test_unbound_pod_deletes_at_once_and_preconditions_hold(client: Client, namespace: str) -> None:
    pod = await client.create(make_pod("u", namespace))
    with pytest.raises(Conflict, match="UID in precondition"):
        await client.delete(core_pb2.Pod, "u", namespace, uid="not-the-uid")
    await client.delete(core_pb2.Pod, "u", namespace, uid=pod.metadata.uid)
    with pytest.raises(NotFound, match='pods "u" not found'):
        await client.get(core_pb2.Pod, "u", namespace)


async def test_label_and_field_selectors(client: Client, namespace: str) -> None:
    for i in range(6):
        await client.create(make_pod(f"p{i}", namespace, app="web" if i % 2 else "db", tier=str(i)))
    await client.bind(await client.get(core_pb2.Pod, "p1", namespace), "node-x")

    async def names(**kw: str) -> list[str]:
        return [p.metadata.name for p in (await client.list(core_pb2.Pod, namespace, **kw)).items]  # type: ignore[arg-type]

    assert await names(label_selector="app=web") == ["p1", "p3", "p5"]
    assert await names(label_selector="app!=web,tier notin (0)") == ["p2", "p4"]
    assert await names(label_selector="tier in (1,2),app") == ["p1", "p2"]
    assert await names(label_selector="!nope,app=db") == ["p0", "p2", "p4"]
    assert await names(field_selector="spec.nodeName=node-x") == ["p1"]
    assert await names(field_selector="metadata.name=p4") == ["p4"]
    assert await names(field_selector="status.phase=Pending,metadata.name!=p0", label_selector="app=db") == ["p2", "p4"]
    with pytest.raises(BadRequest, match=r"unable to parse requirement: found .web. expected: .\(."):
        await names(label_selector="app in web")


async def test_pagination_reads_one_snapshot(client: Client, namespace: str) -> None:
    for i in range(7):
        await client.create(make_pod(f"page{i}", namespace))
    first = await client.list(core_pb2.Pod, namespace, limit=3)
    assert [p.metadata.name for p in first.items] == ["page0", "page1", "page2"]
    assert first.continue_token and first.remaining_item_count == 4
    await client.create(make_pod("page3a", namespace))  # written after the first page
    rest: list[str] = []
    token = first.continue_token
    while token:
        page = await client.list(core_pb2.Pod, namespace, limit=3, continue_token=token)
        assert page.resource_version == first.resource_version
        rest += [p.metadata.name for p in page.items]
        token = page.continue_token
    assert rest == ["page3", "page4", "page5", "page6"], "later writes stay out of a paginated list"


async def test_object_size_limit(client: Client, namespace: str) -> None:
    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    cm.metadata.name, cm.metadata.namespace = "big", namespace
    cm.data["blob"] = "x" * (1024 * 1024 + 10)
    with pytest.raises((TooLarge, Invalid)):
        await client.create(cm)
    with pytest.raises(NotFound):
        await client.get(core_pb2.ConfigMap, "big", namespace)


async def test_watch_from_resource_version_sees_every_change_in_order(client: Client, namespace: str) -> None:
    start = await client.create(make_pod("w0", namespace))
    seen: list[tuple[str, str, int]] = []

    async def watch() -> None:
        async for ev in client.watch(core_pb2.Pod, namespace, resource_version=start.metadata.resource_version):
            if ev.type == "BOOKMARK":
                continue
            assert ev.object is not None
            seen.append((ev.type, ev.object.metadata.name, int(ev.resource_version)))
            if len(seen) == 5:
                return

    task = asyncio.create_task(watch())
    a = await client.create(make_pod("w1", namespace))
    a.metadata.labels["v"] = "2"
    await client.update(a)
    await client.create(make_pod("w2", namespace))
    await client.delete(core_pb2.Pod, "w1", namespace)
    await client.delete(core_pb2.Pod, "w0", namespace)
    await asyncio.wait_for(task, 10)
    assert [(t, n) for t, n, _ in seen] == [
        ("ADDED", "w1"), ("MODIFIED", "w1"), ("ADDED", "w2"), ("DELETED", "w1"), ("DELETED", "w0")]
    revisions = [r for _, _, r in seen]
    assert revisions == sorted(revisions) and revisions[0] > int(start.metadata.resource_version)


async def test_watch_with_selector_sees_objects_enter_and_leave(client: Client, namespace: str) -> None:
    pod = await client.create(make_pod("sel", namespace, app="db"))
    events: list[str] = []

    async def watch() -> None:
        async for ev in client.watch(core_pb2.Pod, namespace, label_selector="app=web",
                                     resource_version=pod.metadata.resource_version):
            if ev.type != "BOOKMARK":
                events.append(ev.type)
            if len(events) == 2:
                return

    task = asyncio.create_task(watch())
    pod.metadata.labels["app"] = "web"
    pod = await client.update(pod)
    pod.metadata.labels["app"] = "db"
    await client.update(pod)
    await asyncio.wait_for(task, 10)
    assert events == ["ADDED", "DELETED"]


async def test_watch_without_version_starts_with_existing_objects(client: Client, namespace: str) -> None:
    await client.create(make_pod("old", namespace))
    async for ev in client.watch(core_pb2.Pod, namespace):
        assert ev.type == "ADDED" and ev.object is not None and ev.object.metadata.name == "old"
        break


async def test_watch_from_compacted_version_is_gone(client: Client, namespace: str, etcd: Etcd) -> None:
    first = await client.create(make_pod("c0", namespace))
    await client.create(make_pod("c1", namespace))
    latest = await client.create(make_pod("c2", namespace))
    async with aetcd.Client(port=etcd.client_port) as raw:
        await raw.compact(int(latest.metadata.resource_version))
    with pytest.raises(Gone, match="too old resource version"):
        async for _ in client.watch(core_pb2.Pod, namespace, resource_version=first.metadata.resource_version):
            pass


async def test_sigkill_and_restart_loses_nothing(etcd: Etcd, tmp_path: Path) -> None:
    server: ApiServer = start_apiserver(etcd.url, tmp_path)
    port = int(server.address.rpartition(":")[2])
    try:
        async with Client(server.address) as c:
            ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
            ns.metadata.name = "crash-test"
            await c.create(ns)
            created = [await c.create(make_pod(f"k{i}", "crash-test")) for i in range(20)]
            mark = created[0].metadata.resource_version
        server.process.kill()  # SIGKILL: no chance to flush anything
        server = start_apiserver(etcd.url, tmp_path, port=port)
        async with Client(server.address) as c:
            listed = await c.list(core_pb2.Pod, "crash-test")
            assert {p.metadata.uid for p in listed.items} == {p.metadata.uid for p in created}
            names: list[str] = []
            async for ev in c.watch(core_pb2.Pod, "crash-test", resource_version=mark):
                if ev.type == "ADDED" and ev.object is not None:
                    names.append(ev.object.metadata.name)
                if len(names) == 19:
                    break
            assert names == [f"k{i}" for i in range(1, 20)]
    finally:
        server.process.stop()


async def test_unknown_resource_and_bad_continue(client: Client) -> None:
    with pytest.raises(BadRequest, match="continue"):
        await client.list(core_pb2.Pod, "default", limit=1, continue_token="garbage!")


async def test_metrics_reports_live_in_memory(client: Client, namespace: str) -> None:
    from proto import metrics_pb2

    report = metrics_pb2.PodMetrics(window="10s")
    report.metadata.name, report.metadata.namespace = "web", namespace
    report.containers.add(name="app").usage.update({"cpu": "250m", "memory": "64Mi"})
    await client.create(report)
    report.containers[0].usage["cpu"] = "300m"
    await client.update(report)  # a report replaces the last one
    got = await client.get(metrics_pb2.PodMetrics, "web", namespace)
    assert got.containers[0].usage["cpu"] == "300m" and got.kind == "PodMetrics"
    listed = await client.list(metrics_pb2.PodMetrics, namespace)
    assert [m.metadata.name for m in listed.items] == ["web"]
    with pytest.raises(BadRequest, match="cannot be watched"):
        async for _ in client.watch(metrics_pb2.PodMetrics, namespace):
            pass
