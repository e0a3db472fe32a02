"""The Kubernetes HTTP API, request by request, as raw HTTP against the real apiserver.

Each story sends what kubectl or a client library sends (paths, query, Accept,
Content-Type) and checks what Kubernetes would answer: codes, Status bodies,
List kinds and metadata, watch lines, Tables.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aetcd
import aiohttp
import orjson
import pytest

from controlplane.apiserver.http import codec, requestinfo
from proto import manifest, wire
from provision.processes import Etcd

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"


@pytest.fixture
async def http(http_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=http_url) as session:
        yield session


@pytest.fixture
async def ns(http: aiohttp.ClientSession) -> str:
    name = f"h-{uuid.uuid4().hex[:10]}"
    async with http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                     "metadata": {"name": name}}) as r:
        assert r.status == 201, await r.text()
    return name


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}


async def call(http: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> tuple[int, Any, Any]:
    async with http.request(method, path, **kw) as r:
        body = await r.read()
        return r.status, (orjson.loads(body) if body else None), r.headers


# ---------------------------------------------------------------- parsing (no server)


def test_request_info_reads_paths_as_kubernetes() -> None:
    info = requestinfo.parse("GET", "/api/v1/namespaces/ns1/pods/web/log", {})
    assert (info.verb, info.namespace, info.resource, info.name, info.subresource) == ("get", "ns1", "pods", "web",
                                                                                        "log")
    assert requestinfo.parse("GET", "/apis/apps/v1/deployments", {}).verb == "list"
    assert requestinfo.parse("GET", "/api/v1/namespaces/a/pods", {"watch": "true"}).verb == "watch"
    assert requestinfo.parse("DELETE", "/api/v1/namespaces/a/pods", {}).verb == "deletecollection"
    ns = requestinfo.parse("PUT", "/api/v1/namespaces/a/status", {})
    assert (ns.resource, ns.name, ns.subresource, ns.verb) == ("namespaces", "a", "status", "update")
    assert not requestinfo.parse("GET", "/apis/apps", {}).is_resource_request
    assert not requestinfo.parse("GET", "/version", {}).is_resource_request


def test_fast_json_matches_manifest_to_dict() -> None:
    obj = manifest.from_dict({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "labels": {"a": "b"}},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"name": "x", "port": 81, "targetPort": "http"}],
                 "selector": {"app": "web"}}})
    obj.metadata.creation_timestamp.FromSeconds(1_700_000_000)  # type: ignore[attr-defined]
    obj.metadata.generation = 3  # type: ignore[attr-defined]
    assert codec.object_dict(obj) == manifest.to_dict(obj)
    secret = manifest.from_dict({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                                 "data": {"k": "aGVsbG8="}})
    assert codec.object_dict(secret) == manifest.to_dict(secret)


# ---------------------------------------------------------------- discovery and version


async def test_version_health_and_discovery(http: aiohttp.ClientSession) -> None:
    code, version, _ = await call(http, "GET", "/version")
    assert code == 200 and version["major"] == "1" and version["minor"] == "32"
    assert "flotilla" in version["gitVersion"]
    async with http.get("/healthz") as r:
        assert r.status == 200 and await r.text() == "ok"
    code, api, _ = await call(http, "GET", "/api")
    assert code == 200 and api["versions"] == ["v1"]
    async with http.get("/apis", headers={"Accept": AGGREGATED}) as r:
        assert r.status == 200 and "apidiscovery.k8s.io" in r.headers["Content-Type"]
        assert (await r.json(content_type=None))["kind"] == "APIGroupDiscoveryList"
    code, resources, _ = await call(http, "GET", "/apis/apps/v1")
    assert code == 200 and "deployments/scale" in {r["name"] for r in resources["resources"]}
    code, group, _ = await call(http, "GET", "/apis/apps")
    assert code == 200 and group["kind"] == "APIGroup" and group["name"] == "apps"
    code, status, _ = await call(http, "GET", "/apis/nosuch.io/v1/things")
    assert code == 404 and status["reason"] == "NotFound"
    code, index, _ = await call(http, "GET", "/openapi/v3")
    assert code == 200 and "apis/apps/v1" in index["paths"]


# ---------------------------------------------------------------- CRUD and errors


async def test_create_get_update_delete_with_kubernetes_codes(http: aiohttp.ClientSession, ns: str) -> None:
    base = f"/api/v1/namespaces/{ns}/pods"
    code, created, _ = await call(http, "POST", base, json=pod("web", app="web"))
    assert code == 201 and created["metadata"]["uid"] and created["kind"] == "Pod"
    code, again, _ = await call(http, "POST", base, json=pod("web"))
    assert code == 409 and again["reason"] == "AlreadyExists" and again["message"] == 'pods "web" already exists'
    code, got, _ = await call(http, "GET", f"{base}/web")
    assert code == 200 and got["metadata"]["labels"] == {"app": "web"}
    got["metadata"]["labels"]["tier"] = "front"
    code, updated, _ = await call(http, "PUT", f"{base}/web", json=got)
    assert code == 200 and updated["metadata"]["labels"]["tier"] == "front"
    code, stale, _ = await call(http, "PUT", f"{base}/web", json=got)  # the old resourceVersion
    assert code == 409 and stale["reason"] == "Conflict"
    code, deleted, _ = await call(http, "DELETE", f"{base}/web")
    assert code == 200 and deleted["metadata"]["name"] == "web"  # pods answer with the deleted object
    code, missing, _ = await call(http, "GET", f"{base}/web")
    assert code == 404 and missing["message"] == 'pods "web" not found'
    assert missing["details"] == {"name": "web", "kind": "pods"}


async def test_invalid_object_is_422_with_causes_and_nothing_stored(http: aiohttp.ClientSession, ns: str) -> None:
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"}, "spec": {}}
    code, status, _ = await call(http, "POST", f"/api/v1/namespaces/{ns}/pods", json=bad)
    assert code == 422 and status["reason"] == "Invalid"
    assert status["details"]["kind"] == "Pod" and status["details"]["name"] == "bad"
    assert {"field": "spec.containers", "message": "Required value",
            "reason": "FieldValueRequired"} in status["details"]["causes"]
    code, _, _ = await call(http, "GET", f"/api/v1/namespaces/{ns}/pods/bad")
    assert code == 404
    code, status, _ = await call(http, "POST", f"/api/v1/namespaces/{ns}/pods", data=b"{not json",
                                 headers={"Content-Type": "application/json"})
    assert code == 400 and status["reason"] == "BadRequest"


async def test_field_validation_strict_warn_ignore(http: aiohttp.ClientSession, ns: str) -> None:
    body = pod("fv")
    body["spec"]["containers"][0]["imagePolicy"] = "x"
    path = f"/api/v1/namespaces/{ns}/pods"
    code, status, _ = await call(http, "POST", f"{path}?fieldValidation=Strict", json=body)
    assert code == 400 and 'unknown field "spec.containers[0].imagePolicy"' in status["message"]
    code, _, headers = await call(http, "POST", f"{path}?fieldValidation=Warn&dryRun=All", json=body)
    assert code == 201 and 'unknown field \\"spec.containers[0].imagePolicy\\"' in headers["Warning"]
    code, _, headers = await call(http, "POST", f"{path}?fieldValidation=Ignore", json=body)
    assert code == 201 and "Warning" not in headers
    code, status, _ = await call(http, "POST", f"{path}?fieldValidation=Sometimes", json=pod("x"))
    assert code == 400


async def test_dry_run_and_generate_name(http: aiohttp.ClientSession, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dry"}, "data": {"a": "1"}}
    code, _, _ = await call(http, "POST", f"{path}?dryRun=All", json=cm)
    assert code == 201
    assert (await call(http, "GET", f"{path}/dry"))[0] == 404
    generated = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}}
    code, created, _ = await call(http, "POST", path, json=generated)
    assert code == 201 and created["metadata"]["name"].startswith("gen-") and len(created["metadata"]["name"]) == 9


async def test_protobuf_create_body(http: aiohttp.ClientSession, ns: str) -> None:
    body = wire.encode_dict({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pb"},
                             "data": {"k": "v"}})
    code, created, _ = await call(http, "POST", f"/api/v1/namespaces/{ns}/configmaps", data=body,
                                  headers={"Content-Type": wire.CONTENT_TYPE})
    assert code == 201 and created["data"] == {"k": "v"}


async def test_yaml_body_and_patches(http: aiohttp.ClientSession, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    yaml_body = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  a: '1'\n"
    code, _, _ = await call(http, "POST", path, data=yaml_body, headers={"Content-Type": "application/yaml"})
    assert code == 201
    code, merged, _ = await call(http, "PATCH", f"{path}/y", data=b'{"data":{"b":"2"}}',
                                 headers={"Content-Type": "application/merge-patch+json"})
    assert code == 200 and merged["data"] == {"a": "1", "b": "2"}
    code, patched, _ = await call(http, "PATCH", f"{path}/y", data=b'[{"op":"remove","path":"/data/a"}]',
                                  headers={"Content-Type": "application/json-patch+json"})
    assert code == 200 and patched["data"] == {"b": "2"}
    code, status, _ = await call(http, "PATCH", f"{path}/y", data=b"{}", headers={"Content-Type": "text/plain"})
    assert code == 415 and status["reason"] == "UnsupportedMediaType"


# ---------------------------------------------------------------- lists


async def test_list_selectors_and_pagination(http: aiohttp.ClientSession, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/pods"
    for i in range(5):
        assert (await call(http, "POST", path, json=pod(f"p{i}", tier="a" if i % 2 else "b")))[0] == 201
    code, listed, _ = await call(http, "GET", path)
    assert code == 200 and listed["kind"] == "PodList" and listed["apiVersion"] == "v1"
    assert len(listed["items"]) == 5 and int(listed["metadata"]["resourceVersion"]) > 0
    code, selected, _ = await call(http, "GET", f"{path}?labelSelector=tier%3Da")
    assert sorted(i["metadata"]["name"] for i in selected["items"]) == ["p1", "p3"]
    code, one, _ = await call(http, "GET", f"{path}?fieldSelector=metadata.name%3Dp2")
    assert [i["metadata"]["name"] for i in one["items"]] == ["p2"]
    code, page, _ = await call(http, "GET", f"{path}?limit=2")
    assert len(page["items"]) == 2 and page["metadata"]["continue"] and page["metadata"]["remainingItemCount"] == 3
    names = [i["metadata"]["name"] for i in page["items"]]
    token = page["metadata"]["continue"]
    while token:
        code, page, _ = await call(http, "GET", f"{path}?limit=2&continue={token}")
        names += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue")
    assert names == ["p0", "p1", "p2", "p3", "p4"]


async def test_table_and_partial_object_metadata(http: aiohttp.ClientSession, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/pods"
    await call(http, "POST", path, json=pod("t1", app="t"))
    code, table, _ = await call(http, "GET", path, headers={"Accept": TABLE})
    assert code == 200 and table["kind"] == "Table"
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns[:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert any(c["priority"] == 1 for c in table["columnDefinitions"])  # the -o wide ones
    row = table["rows"][0]
    assert row["cells"][0] == "t1" and row["object"]["metadata"]["labels"] == {"app": "t"}
    code, one, _ = await call(http, "GET", f"{path}/t1", headers={"Accept": TABLE})
    assert one["kind"] == "Table" and len(one["rows"]) == 1
    partial = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
    code, meta_list, _ = await call(http, "GET", path, headers={"Accept": partial})
    assert meta_list["kind"] == "PartialObjectMetadataList" and "spec" not in meta_list["items"][0]
    assert meta_list["items"][0]["metadata"]["name"] == "t1"


async def test_delete_collection_and_delete_options(http: aiohttp.ClientSession, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    for name, team in (("a", "x"), ("b", "x"), ("c", "y")):
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"team": team}}}
        assert (await call(http, "POST", path, json=cm))[0] == 201
    code, gone, _ = await call(http, "DELETE", f"{path}/c?dryRun=All")
    assert code == 200 and gone["status"] == "Success" and gone["details"]["name"] == "c"  # others: a Status
    code, deleted, _ = await call(http, "DELETE", f"{path}?labelSelector=team%3Dx")
    assert code == 200 and sorted(i["metadata"]["name"] for i in deleted["items"]) == ["a", "b"]
    code, left, _ = await call(http, "GET", path)
    assert [i["metadata"]["name"] for i in left["items"]] == ["c"]
    code, status, _ = await call(http, "DELETE", f"{path}/c", json={
        "apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": "not-the-uid"}})
    assert code == 409 and status["reason"] == "Conflict"
    code, _, _ = await call(http, "DELETE", f"{path}/c", json={"dryRun": ["All"]})
    assert code == 200 and (await call(http, "GET", f"{path}/c"))[0] == 200


# ---------------------------------------------------------------- watches


async def read_events(response: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while len(events) < count:
            line = await response.content.readline()
            assert line, "the watch ended early"
            events.append(orjson.loads(line))
    return events


async def test_watch_streams_changes_and_ends_at_timeout(http: aiohttp.ClientSession, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w"}}
    await call(http, "POST", path, json=cm)
    async with http.get(f"{path}?watch=true&timeoutSeconds=3") as r:
        assert r.status == 200
        first = await read_events(r, 1)
        assert first[0]["type"] == "ADDED" and first[0]["object"]["metadata"]["name"] == "w"
        await call(http, "PATCH", f"{path}/w", data=b'{"data":{"a":"1"}}',
                   headers={"Content-Type": "application/merge-patch+json"})
        await call(http, "DELETE", f"{path}/w")
        rest = await read_events(r, 2)
        assert [e["type"] for e in rest] == ["MODIFIED", "DELETED"]
        async with asyncio.timeout(10):
            assert await r.content.read() == b""  # timeoutSeconds: the server ends the stream cleanly


async def test_watch_bookmarks_and_table(http_url: str, ns: str) -> None:
    async with aiohttp.ClientSession(base_url=http_url) as http:
        path = f"/api/v1/namespaces/{ns}/configmaps"
        _, listed, _ = await call(http, "GET", path)
        rv = listed["metadata"]["resourceVersion"]
        async with http.get(f"{path}?watch=true&resourceVersion={rv}&timeoutSeconds=5",
                            headers={"Accept": TABLE}) as r:
            await call(http, "POST", path, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t"}})
            event = (await read_events(r, 1))[0]
            assert event["type"] == "ADDED" and event["object"]["kind"] == "Table"
            assert event["object"]["rows"][0]["cells"][0] == "t"


async def test_watch_too_old_is_410_error_event(http: aiohttp.ClientSession, ns: str, etcd: Etcd) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    await call(http, "POST", path, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "old"}})
    _, listed, _ = await call(http, "GET", path)
    old = int(listed["metadata"]["resourceVersion"])
    await call(http, "POST", path, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}})
    _, listed, _ = await call(http, "GET", path)
    host, port = etcd.url.removeprefix("http://").split(":")
    async with aetcd.Client(host=host, port=int(port)) as raw:
        await raw.compact(int(listed["metadata"]["resourceVersion"]))
    async with http.get(f"{path}?watch=true&resourceVersion={old - 1}") as r:
        assert r.status == 200
        event = (await read_events(r, 1))[0]
        assert event["type"] == "ERROR"
        assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"


async def test_bookmark_objects_carry_only_their_version() -> None:
    from controlplane.apiserver.http.watch import _Encoder
    from controlplane.apiserver.registry import Event
    from proto import kinds

    line = _Encoder(kinds.resolve("pods"), codec.Rendering()).line(Event("BOOKMARK", b"", 42))
    assert orjson.loads(line) == {"type": "BOOKMARK", "object": {
        "kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "42"}}}
