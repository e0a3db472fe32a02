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


# ---------------------------------------------------------------- field managers, conflicts, warnings, dry runs


def managers(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """managedFields by (manager, subresource)."""
    return {(e["manager"], e.get("subresource", "")): e for e in obj["metadata"].get("managedFields", [])}


async def test_writes_record_their_field_manager(http: aiohttp.ClientSession, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned"}, "data": {"a": "1"}}
    code, created, _ = await call(http, "POST", f"{path}?fieldManager=kubectl-create", json=cm)
    assert code == 201
    entry = managers(created)["kubectl-create", ""]
    assert entry["operation"] == "Update" and entry["apiVersion"] == "v1" and entry["fieldsType"] == "FieldsV1"
    assert entry["fieldsV1"] == {"f:data": {".": {}, "f:a": {}}}
    # Without ?fieldManager the manager is the User-Agent up to its first "/", as kube-apiserver takes it.
    code, labelled, _ = await call(http, "PATCH", f"{path}/owned", data=b'{"metadata":{"labels":{"x":"y"}}}',
                                   headers={"Content-Type": "application/merge-patch+json",
                                            "User-Agent": "kubectl-label/v1.32.0 (linux/amd64)"})
    assert code == 200
    assert managers(labelled)["kubectl-label", ""]["fieldsV1"] == {"f:metadata": {"f:labels": {".": {},
                                                                                              "f:x": {}}}}
    labelled["data"]["a"] = "2"
    code, replaced, _ = await call(http, "PUT", f"{path}/owned", json=labelled,
                                   headers={"User-Agent": "Python-urllib/3.12"})
    assert code == 200
    owners = managers(replaced)
    assert owners["Python-urllib", ""]["fieldsV1"] == {"f:data": {"f:a": {}}}
    assert owners["kubectl-create", ""]["fieldsV1"] == {"f:data": {}}  # still the map's owner, not the key's
    code, again, _ = await call(http, "PUT", f"{path}/owned", json=replaced)  # a no-op: nothing moves
    assert code == 200 and again["metadata"]["resourceVersion"] == replaced["metadata"]["resourceVersion"]


async def test_status_and_scale_writes_record_their_subresource(http: aiohttp.ClientSession, ns: str) -> None:
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                           "template": {"metadata": {"labels": {"app": "web"}},
                                        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}}
    assert (await call(http, "POST", f"{path}?fieldManager=kubectl-create", json=deployment))[0] == 201
    code, _, _ = await call(http, "PATCH", f"{path}/web/scale", data=b'{"spec":{"replicas":3}}',
                            headers={"Content-Type": "application/merge-patch+json",
                                     "User-Agent": "kubectl-scale/v1.32.0"})
    assert code == 200
    code, scaled, _ = await call(http, "GET", f"{path}/web")
    owners = managers(scaled)
    assert owners["kubectl-scale", "scale"]["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    assert "f:replicas" not in owners["kubectl-create", ""]["fieldsV1"]["f:spec"]  # taken by the scaler
    scaled["status"] = {"replicas": 3, "observedGeneration": 1}
    code, status, _ = await call(http, "PUT", f"{path}/web/status?fieldManager=my-controller", json=scaled)
    assert code == 200
    assert managers(status)["my-controller", "status"]["fieldsV1"] == {
        "f:status": {"f:observedGeneration": {}, "f:replicas": {}}}


async def test_apply_conflict_is_409_with_field_manager_causes(http: aiohttp.ClientSession, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1"}}
    assert (await call(http, "POST", f"{path}?fieldManager=first", json=cm))[0] == 201
    applied = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {x: '2'}\n"
    apply = {"Content-Type": "application/apply-patch+yaml"}
    code, status, _ = await call(http, "PATCH", f"{path}/c?fieldManager=second", data=applied, headers=apply)
    assert code == 409 and status["reason"] == "Conflict"
    assert status["message"] == 'Apply failed with 1 conflict: conflict with "first" using v1: .data.x'
    assert status["details"] == {"causes": [{"reason": "FieldManagerConflict", "field": ".data.x",
                                             "message": 'conflict with "first" using v1'}]}
    code, forced, _ = await call(http, "PATCH", f"{path}/c?fieldManager=second&force=true", data=applied,
                                 headers=apply)
    assert code == 200 and forced["data"] == {"x": "2"}
    assert managers(forced)["second", ""]["operation"] == "Apply"


async def test_bad_patch_options_and_types(http: aiohttp.ClientSession, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    assert (await call(http, "POST", path, json={"apiVersion": "v1", "kind": "ConfigMap",
                                                 "metadata": {"name": "p"}}))[0] == 201
    merge = {"Content-Type": "application/merge-patch+json"}
    code, status, _ = await call(http, "PATCH", f"{path}/p?force=true", data=b"{}", headers=merge)
    assert code == 422 and status["details"]["causes"][0]["field"] == "force"
    code, status, _ = await call(http, "PATCH", f"{path}/p?fieldManager={'m' * 129}", data=b"{}", headers=merge)
    assert code == 422 and "may not be more than 128 bytes" in status["message"]
    code, status, _ = await call(http, "POST", f"{path}?fieldManager={'m' * 129}", json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "q"}})
    assert code == 422 and (await call(http, "GET", f"{path}/q"))[0] == 404
    code, status, _ = await call(http, "PATCH", f"{path}/p", data=b"{}", headers={"Content-Type": "text/plain"})
    assert code == 415 and status["reason"] == "UnsupportedMediaType"
    code, status, _ = await call(http, "PATCH", f"{path}/p", data=b'[{"op":"test","path":"/data","value":1}]',
                                 headers={"Content-Type": "application/json-patch+json"})
    # a patch that does not apply: Kubernetes' complete 422 message, its reason as the one cause
    assert code == 422 and status["message"] == "the server rejected our request due to an error in our request"
    assert status["details"]["causes"] == [{"message": "testing value /data failed"}]


async def _namespace(http: aiohttp.ClientSession, **labels: str) -> str:
    name = f"h-{uuid.uuid4().hex[:10]}"
    code, _, _ = await call(http, "POST", "/api/v1/namespaces", json={
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    assert code == 201
    return name


RESTRICTED_WARNING = 'would violate PodSecurity \\"restricted:latest\\"'


async def test_admission_warnings_are_warning_headers_also_on_errors(http: aiohttp.ClientSession) -> None:
    ns = await _namespace(http, **{"pod-security.kubernetes.io/enforce": "privileged",
                                   "pod-security.kubernetes.io/warn": "restricted"})
    path = f"/api/v1/namespaces/{ns}/pods"
    code, _, headers = await call(http, "POST", path, json=pod("warned"))
    assert code == 201
    warnings = headers.getall("Warning")
    assert len(warnings) == 1 and warnings[0].startswith('299 - "' + RESTRICTED_WARNING)
    squatter = pod("squatter")
    squatter["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 6443}]
    code, status, headers = await call(http, "POST", path, json=squatter)
    assert code == 403 and "port 6443 is reserved for the control plane" in status["message"]
    assert any(w.startswith('299 - "' + RESTRICTED_WARNING) for w in headers.getall("Warning"))


async def test_admission_warnings_travel_as_grpc_trailing_metadata(apiserver: Any, http: aiohttp.ClientSession
                                                                   ) -> None:
    import grpc

    from proto import apiserver_pb2, apiserver_pb2_grpc, core_pb2

    ns = await _namespace(http, **{"pod-security.kubernetes.io/warn": "restricted"})
    created = manifest.from_dict(pod("warned"))
    async with grpc.aio.insecure_channel(apiserver.address) as channel:
        call_ = apiserver_pb2_grpc.ApiServerStub(channel).Create(apiserver_pb2.CreateRequest(
            resource="pods", namespace=ns, object=created.SerializeToString()))
        reply = await call_
        trailers = await call_.trailing_metadata()
    assert core_pb2.Pod.FromString(reply.object).metadata.name == "warned"
    warnings = [value for key, value in trailers if key == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith('would violate PodSecurity "restricted:latest"')


async def test_dry_run_writes_pass_admission_and_allocation_checks(http: aiohttp.ClientSession, ns: str) -> None:
    deployments = f"/apis/apps/v1/namespaces/{ns}/deployments"
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                  "spec": {"selector": {"matchLabels": {"app": "d"}},
                           "template": {"metadata": {"labels": {"app": "d"}},
                                        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}}
    code, stored, _ = await call(http, "POST", deployments, json=deployment)
    assert code == 201
    stored["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 2379}]
    code, status, _ = await call(http, "PUT", f"{deployments}/d?dryRun=All", json=stored)
    assert code == 403 and "port 2379 is reserved for the control plane" in status["message"]

    services = f"/api/v1/namespaces/{ns}/services"

    def service(name: str, node_port: int = 0) -> dict[str, Any]:
        port: dict[str, Any] = {"port": 80, **({"nodePort": node_port} if node_port else {})}
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"type": "NodePort", "selector": {"app": "d"}, "ports": [port]}}
    code, first, _ = await call(http, "POST", services, json=service("first"))
    assert code == 201
    taken = first["spec"]["ports"][0]["nodePort"]
    code, status, _ = await call(http, "POST", f"{services}?dryRun=All", json=service("second", taken))
    assert code == 422 and "provided port is already allocated" in status["message"]
    code, dry, _ = await call(http, "POST", f"{services}?dryRun=All", json=service("second"))
    assert code == 201 and dry["spec"]["clusterIP"] and dry["spec"]["ports"][0]["nodePort"]
    code, second, _ = await call(http, "POST", services, json=service("second", dry["spec"]["ports"][0]["nodePort"]))
    assert code == 201  # the dry run gave back what it tried
    second["spec"]["ports"][0]["nodePort"] = taken
    code, status, _ = await call(http, "PUT", f"{services}/second?dryRun=All", json=second)
    assert code == 422 and "provided port is already allocated" in status["message"]
    code, gone, _ = await call(http, "DELETE", f"{services}/second?dryRun=All")
    assert code == 200 and gone["metadata"]["name"] == "second"  # services answer with the object
    assert (await call(http, "GET", f"{services}/second"))[0] == 200


async def test_audit_records_carry_admission_annotations(etcd: Etcd, tmp_path: Any) -> None:
    from controlplane.apiserver.audit import AuditLog
    from controlplane.apiserver.auth import UserInfo
    from controlplane.apiserver.endpoints import Endpoints, collect_warnings
    from controlplane.apiserver.registry import Registry
    from controlplane.apiserver.storage import Storage
    from proto import kinds

    storage = Storage(etcd.url)
    await storage.connect()
    endpoints = Endpoints(Registry(storage), audit=AuditLog(tmp_path / "audit.log"))
    admin = UserInfo("admin", ("system:masters",))
    name = f"h-{uuid.uuid4().hex[:10]}"
    await endpoints.create(admin, kinds.resolve("namespaces"), "", manifest.from_dict({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/audit": "restricted"}}}))
    with collect_warnings() as warnings:
        await endpoints.create(admin, kinds.resolve("pods"), name, manifest.from_dict(pod("audited")))
    assert warnings == []  # audit mode: the record says it, the client is not told
    record = orjson.loads((tmp_path / "audit.log").read_text().splitlines()[-1])
    assert record["verb"] == "create" and record["name"] == "audited" and record["result"] == "OK"
    assert record["annotations"]["pod-security.kubernetes.io/audit-violations"].startswith(
        'would violate PodSecurity "restricted:latest"')
    await storage.close()


# ---------------------------------------------------------------- the apiserver's admission flags


def test_admission_flags_configure_the_chain() -> None:
    from controlplane.apiserver import main
    from controlplane.apiserver.admission.reservedhostports import ReservedHostPorts
    from controlplane.apiserver.registry import Registry
    from controlplane.apiserver.storage import Storage

    registry = Registry(Storage("http://127.0.0.1:1"))  # never connected: the flags act before etcd
    opts = main.parse_args(["--disable-admission-plugins", "PodSecurity, DenyServiceExternalIPs",
                            "--reserved-host-ports", "2379,6443"])
    main.configure_admission(registry, opts)
    assert "PodSecurity" not in registry.admission.names and "DenyServiceExternalIPs" not in registry.admission.names
    plugin = next(p for p in registry.admission.plugins if isinstance(p, ReservedHostPorts))
    assert plugin.ports == {2379, 6443}
    with pytest.raises(SystemExit, match="unknown admission plugins: PodSecurityPolicy"):
        main.configure_admission(Registry(Storage("http://127.0.0.1:1")),
                                 main.parse_args(["--disable-admission-plugins", "PodSecurityPolicy"]))
    with pytest.raises(SystemExit):
        main.parse_args(["--reserved-host-ports", "6443,http"])


def test_clusters_reserve_the_ports_their_control_plane_uses(tmp_path: Any) -> None:
    from provision import components

    plan = components.ClusterPlan("c", "10.0.0.1", (), "10.244.0.0/16", "http://127.0.0.1:12379", tmp_path,
                                  registry="10.0.0.1:5000")
    argv = components.apiserver_argv(plan)
    ports = argv[argv.index("--reserved-host-ports") + 1]
    assert ports == "5000,5001,6443,6444,6445,10250,12379,12380"  # the registry pulls on 5000, takes pushes on 5001


async def test_public_version_keeps_the_storage_version_to_itself(http: aiohttp.ClientSession) -> None:
    # /version answers before credentials; which etcd runs underneath is for signed-in users only.
    status, body, _ = await call(http, "GET", "/version")
    assert status == 200 and body["major"] == "1"
    assert "etcdVersion" not in body


async def test_watch_from_a_future_resource_version_is_too_large(http: aiohttp.ClientSession, ns: str) -> None:
    # The stream has begun when the registry finds out, so the Status comes as the watch's ERROR event.
    status, body, _ = await call(http, "GET", f"/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion=999999999")
    assert status == 200 and body["type"] == "ERROR", body
    assert (body["object"]["code"], body["object"]["reason"]) == (504, "Timeout")
    assert body["object"]["message"].startswith("Too large resource version: 999999999, current: ")
