"""Fuzzing the Kubernetes HTTP API: hostile requests to a live apiserver's `--http-listen` port.

What test_fuzz_api.py does to gRPC, done to HTTP, where there is more to get
wrong: the body's encoding (JSON, YAML, Kubernetes protobuf) and Content-Type,
the path (groups, versions, resources, names, subresources, the deprecated
/watch/ prefix), the method, every query parameter, every patch type, and the
Accept header. Requests go out through http.client, so nothing on the client
side tidies them:

- creates whose bodies are random bytes, hostile manifests (tests/faults/fuzzing.py)
  as JSON or YAML, corrupted protobuf envelopes, or oversized, under the right,
  a wrong or a made-up Content-Type;
- unknown paths, kinds, verbs and subresources, odd methods and percent-escapes;
- JSON, merge, strategic merge and apply patches that are malformed, do not fit
  the object, or carry hostile directives;
- lists, watches, gets and deletes with made-up selectors, limits, continue
  tokens, resourceVersions, timeouts, dry runs, grace periods and policies.

Every answer is a success or a client error (4xx) carried as a meta/v1 Status
whose code is the HTTP code — never a 500, a traceback or a hang — and after
each run the apiserver still answers, lists and watches, its log has no
traceback, and every object that appeared is one whose create was answered
201: nothing half-written. Derandomized in CI (the `flotilla-ci` profile).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.strategies import DataObject

from proto import wire
from provision.processes import ApiServer, free_port, start_apiserver
from tests.faults.fuzzing import any_text, fuzz_settings, hostile_manifests, values
from tests.faults.support import FaultControlPlane

# A client's mistake, answered as such; anything else (500, 502, 503 ...) is a server fault.
CLIENT_ERRORS = {400, 401, 403, 404, 405, 406, 409, 410, 413, 414, 415, 422, 429}
OK = {200, 201, 202}
TIMEOUT = 15.0  # seconds: longer is a hang
RESOURCES = {"pods": "/api/v1", "configmaps": "/api/v1", "services": "/api/v1", "secrets": "/api/v1",
             "deployments": "/apis/apps/v1", "replicasets": "/apis/apps/v1"}
CHECKED = [("/api/v1", "pods"), ("/api/v1", "configmaps"), ("/api/v1", "services"), ("/api/v1", "secrets"),
           ("/api/v1", "namespaces"), ("/apis/apps/v1", "deployments"), ("/apis/apps/v1", "replicasets")]
CONTENT_TYPES = ["application/json", "application/yaml", wire.CONTENT_TYPE, "", "text/plain",
                 "application/json; charset=utf-16", "application/x-www-form-urlencoded", "multipart/form-data",
                 "application/merge-patch+json", "application/apply-patch+yaml", "*/*", "application/json;;;=",
                 "\u00e9/\u00e9"]
PATCH_TYPES = ["application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml"]
ACCEPTS = ["", "application/json", "application/json;as=Table;v=v1;g=meta.k8s.io",
           "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io", "application/json;as=Table",
           "application/json;as=Nope;v=v9;g=x", wire.CONTENT_TYPE, "text/html", "*/*;q=0", ";;;,,,", "a/b;c"]
MAX_BODY = 3 * 1024 * 1024


@dataclass
class Answer:
    code: int
    body: bytes
    headers: http.client.HTTPMessage


@dataclass
class Ledger:
    """What the fuzzer was told: uids of objects created, where they are, and every code seen."""

    created: set[str] = field(default_factory=set)
    objects: set[str] = field(default_factory=set)  # paths of created objects, deleted after the run
    codes: Counter[int] = field(default_factory=Counter)


class RawHttp:
    """Requests as bytes on a fresh connection each: a hostile one cannot spoil the next."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                *, stream: bool | str = False) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                conn.putheader(name, value.encode("utf-8", "surrogatepass"))
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            # A watch that was accepted streams until its timeout: what has arrived is enough (a quiet one
            # would keep us waiting for its timeout, so only the headers are read unless asked for more).
            if stream and response.status == 200:
                data = response.read1(65536) if stream == "first-events" else b""
            else:
                data = response.read()
            return Answer(response.status, data, response.msg)
        finally:
            conn.close()


@pytest.fixture(scope="module")
def http_apiserver(fault_plane: FaultControlPlane, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[ApiServer, int, Path]]:
    """An apiserver serving HTTP on the fault plane's etcd (the plane's own one serves gRPC only)."""
    folder: Path = tmp_path_factory.mktemp("fuzz-http")
    port = free_port()
    server = start_apiserver(fault_plane.etcd_url, folder, extra=["--http-listen", f"127.0.0.1:{port}",
                                                                  "--log-level", "WARNING"])
    raw = RawHttp(port)
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError):
            if raw.request("GET", "/version").code == 200:
                break
        assert time.monotonic() < deadline, "the HTTP listener never answered"
        time.sleep(0.1)
    yield server, port, folder / "apiserver.log"
    server.process.stop()


@pytest.fixture(scope="module")
def raw(http_apiserver: tuple[ApiServer, int, Path]) -> RawHttp:
    return RawHttp(http_apiserver[1])


@pytest.fixture(scope="module")
def fuzz_ns(raw: RawHttp) -> str:
    name = f"fuzz-http-{uuid.uuid4().hex[:8]}"
    answer = raw.request("POST", "/api/v1/namespaces", _json({"apiVersion": "v1", "kind": "Namespace",
                                                              "metadata": {"name": name}}))
    assert answer.code == 201, answer.body
    return name


def _json(data: Any) -> bytes:
    """Any value as JSON text; bytes as base64-ish repr, text that is not UTF-8 as its raw bytes."""
    try:
        return json.dumps(data, default=repr, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except RecursionError:  # 50,000 levels: written by hand, as an attacker would
        return b'{"metadata":' * 50_000 + b"{}" + b"}" * 50_000


def answered(ledger: Ledger, what: str, method: str, answer: Answer) -> None:
    """A success, or a client error as a Status naming the same code; never a crash."""
    ledger.codes[answer.code] += 1
    shown = f"{what}: {answer.code} {answer.body[:300]!r}"
    assert answer.code in OK or answer.code in CLIENT_ERRORS, shown
    assert b"Traceback" not in answer.body, shown
    if answer.code in CLIENT_ERRORS and method != "HEAD":
        status = orjson.loads(answer.body)
        assert status["kind"] == "Status" and status["status"] == "Failure", shown
        assert status["code"] == answer.code and status["reason"] and isinstance(status["message"], str), shown
        assert answer.headers.get("Content-Type", "").startswith("application/json"), shown


def uids(raw: RawHttp) -> dict[str, str]:
    """Every object of the fuzzed resources, in every namespace: uid → resource/namespace/name."""
    found: dict[str, str] = {}
    for prefix, resource in CHECKED:
        answer = raw.request("GET", f"{prefix}/{resource}")
        assert answer.code == 200, f"list {resource} after fuzzing: {answer.code} {answer.body[:300]!r}"
        for item in orjson.loads(answer.body)["items"]:
            meta = item["metadata"]
            found[meta["uid"]] = f"{resource}/{meta.get('namespace', '')}/{meta['name']}"
    return found


@contextlib.contextmanager
def nothing_half_written(raw: RawHttp, log: Path, ledger: Ledger) -> Iterator[None]:
    """After the block: the server answers, lists and watches, logged no traceback, and stored only what it
    acknowledged."""
    before = uids(raw)
    log_start = log.stat().st_size if log.exists() else 0
    yield
    assert raw.request("GET", "/version").code == 200, "the apiserver stopped answering"
    watch = raw.request("GET", "/api/v1/namespaces?watch=true&timeoutSeconds=1", stream="first-events")
    assert watch.code == 200 and b'"ADDED"' in watch.body, f"watch after fuzzing: {watch.code} {watch.body[:200]!r}"
    after = uids(raw)
    unacknowledged = [after[uid] for uid in after.keys() - before.keys() - ledger.created]
    assert not unacknowledged, f"objects stored though their create failed: {unacknowledged}"
    logged = log.read_bytes()[log_start:] if log.exists() else b""
    assert b"Traceback" not in logged, logged.decode(errors="replace")[-3000:]
    print(f"\n  fuzz answers: {dict(sorted(ledger.codes.items()))}")
    for path in ledger.objects:
        raw.request("DELETE", f"{path}?gracePeriodSeconds=0")


def note_created(ledger: Ledger, answer: Answer, path: str) -> None:
    if answer.code == 201:
        created = orjson.loads(answer.body)
        if created.get("kind") == "Table":  # the answer as asked for: the object is the row's
            created = created["rows"][0]["object"]
        meta = created.get("metadata", {})
        if meta.get("uid"):
            ledger.created.add(meta["uid"])
            ledger.objects.add(f"{path}/{urllib.parse.quote(meta['name'], safe='')}")


# ---------------------------------------------------------------- hostile values


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _body(data: DataObject, resource: str) -> bytes:
    """A create body for `resource`: random, a hostile manifest, corrupted protobuf, oversized, or valid."""
    how = data.draw(st.sampled_from(["random", "hostile-json", "hostile-yaml", "protobuf", "corrupt-protobuf",
                                     "huge", "valid", "deep-json", "not-an-object"]))
    valid = _valid(resource, f"f{data.draw(st.integers(0, 20))}")
    if how == "random":
        return data.draw(st.binary(max_size=300))
    if how == "hostile-json":
        return _json(data.draw(hostile_manifests()).build())
    if how == "hostile-yaml":
        with contextlib.suppress(yaml.YAMLError, RecursionError, ValueError):
            return yaml.safe_dump(data.draw(hostile_manifests()).build()).encode("utf-8", "surrogatepass")
        return b"a: [b"
    if how in ("protobuf", "corrupt-protobuf"):
        encoded = wire.encode_dict(valid)
        if how == "corrupt-protobuf":
            at = data.draw(st.integers(0, len(encoded) - 1))
            encoded = encoded[:at] + data.draw(st.binary(min_size=1, max_size=4)) + encoded[at + 1:]
        return encoded
    if how == "huge":
        valid.setdefault("metadata", {})["annotations"] = {"big": "x" * data.draw(st.sampled_from(
            [300_000, 1_600_000, MAX_BODY + 10]))}
        return _json(valid)
    if how == "deep-json":
        depth = data.draw(st.sampled_from([100, 1_000, 100_000]))
        return b'{"metadata":' * depth + b"{}" + b"}" * depth
    if how == "not-an-object":
        return _json(data.draw(values))
    return _json(valid)


_POD_SPEC = {"containers": [{"name": "c", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}
_TEMPLATE = {"selector": {"matchLabels": {"app": "f"}},
             "template": {"metadata": {"labels": {"app": "f"}}, "spec": _POD_SPEC}}
_VALID: dict[str, dict[str, Any]] = {
    "pods": {"apiVersion": "v1", "kind": "Pod", "spec": _POD_SPEC},
    "configmaps": {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"}},
    "services": {"apiVersion": "v1", "kind": "Service", "spec": {"selector": {"app": "f"}, "ports": [{"port": 80}]}},
    "secrets": {"apiVersion": "v1", "kind": "Secret", "data": {"a": "YQ=="}},
    "deployments": {"apiVersion": "apps/v1", "kind": "Deployment", "spec": _TEMPLATE},
    "replicasets": {"apiVersion": "apps/v1", "kind": "ReplicaSet", "spec": _TEMPLATE},
}


def _valid(resource: str, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(_VALID[resource]))
    doc["metadata"] = {"name": name}
    return doc


names = st.one_of(st.sampled_from(["target", "missing", "f1", "", ".", "..", "a" * 300, "%2F", "A_B"]),
                  any_text.filter(_encodable))
queries = st.dictionaries(
    st.sampled_from(["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "timeoutSeconds",
                     "watch", "dryRun", "fieldValidation", "fieldManager", "force", "propagationPolicy",
                     "gracePeriodSeconds", "orphanDependents", "includeObject", "allowWatchBookmarks",
                     "resourceVersionMatch", "pretty", "sendInitialEvents", "x"]),
    st.one_of(st.sampled_from(["", "true", "false", "All", "-1", "0", "1", "9" * 30, "a=b", "a in (b", "!!",
                               "metadata.name=target", "status.phase==Running", "spec.x=1", ",,,", "Strict",
                               "Warn", "Ignore", "Orphan", "Foreground", "Nope", "eyJ2IjoxfQ==", "\x00", "%ff"]),
              any_text.filter(_encodable)),
    max_size=4)


def _query(params: dict[str, str]) -> str:
    return ("?" + urllib.parse.urlencode(params, encoding="utf-8", errors="surrogatepass")) if params else ""


# ---------------------------------------------------------------- the fuzz runs


def test_fuzz_creates(raw: RawHttp, fuzz_ns: str, http_apiserver: tuple[ApiServer, int, Path]) -> None:
    ledger = Ledger()

    @fuzz_settings(150)
    @given(st.data())
    def create(data: DataObject) -> None:
        resource = data.draw(st.sampled_from(sorted(RESOURCES)))
        namespace = data.draw(st.sampled_from([fuzz_ns, fuzz_ns, "no-such-ns", "Bad_NS", "default"]))
        path = f"{RESOURCES[resource]}/namespaces/{namespace}/{resource}"
        body = _body(data, resource)
        content_type = data.draw(st.sampled_from(["application/json"] * 4 + CONTENT_TYPES))
        if data.draw(st.booleans()) and content_type != wire.CONTENT_TYPE and body.startswith(b"k8s\0"):
            content_type = wire.CONTENT_TYPE
        headers = {"Content-Type": content_type, "Accept": data.draw(st.sampled_from(ACCEPTS))}
        if not content_type:
            del headers["Content-Type"]  # the Python client sends none
        query = data.draw(st.dictionaries(st.sampled_from(["dryRun", "fieldValidation", "fieldManager", "pretty"]),
                                          st.sampled_from(["All", "Strict", "Warn", "Ignore", "x", "", "\t"]),
                                          max_size=2))
        answer = raw.request("POST", path + _query(query), body, headers)
        answered(ledger, f"create {resource} ({content_type!r}, {len(body)} bytes)", "POST", answer)
        if answer.code == 201 and query.get("dryRun") != "All":
            note_created(ledger, answer, path)
        elif answer.code == 201:
            assert query.get("dryRun") == "All"

    with nothing_half_written(raw, http_apiserver[2], ledger):
        create()


def test_fuzz_paths_methods_and_queries(raw: RawHttp, fuzz_ns: str,
                                        http_apiserver: tuple[ApiServer, int, Path]) -> None:
    ledger = Ledger()
    segments = st.one_of(st.sampled_from(["api", "apis", "v1", "apps", "namespaces", fuzz_ns, "pods", "configmaps",
                                          "nodes", "deployments", "status", "scale", "log", "exec", "binding",
                                          "eviction", "proxy", "watch", "finalize", "ephemeralcontainers",
                                          "nosuch", "v2", "%ff", "%00", "..", ".", "", "x" * 2000, "a%2Fb",
                                          "apiregistration.k8s.io", "openapi", "version"]),
                         st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~%", max_size=12))

    @fuzz_settings(200)
    @given(st.data())
    def request(data: DataObject) -> None:
        parts = data.draw(st.lists(segments, min_size=0, max_size=8))
        path = "/" + "/".join(parts)
        if data.draw(st.booleans()):
            path = "/" + "/".join([*data.draw(st.sampled_from([["api", "v1"], ["apis", "apps", "v1"],
                                                               ["apis", "nosuch.io", "v1"], ["api", "v2"]])),
                                   *parts])
        method = data.draw(st.sampled_from(["GET", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS",
                                            "TRACE", "PROPFIND", "MKCOL"]))
        params = data.draw(queries)
        if params.get("watch") in ("true", "1") or "watch" in parts:
            params["timeoutSeconds"] = "1"  # a watch that is accepted ends soon
        body = None
        if method in ("POST", "PUT", "PATCH") or data.draw(st.integers(0, 4)) == 0:
            body = data.draw(st.one_of(st.binary(max_size=100), st.just(b"{}"), st.just(b'{"kind":"Status"}')))
        headers = {"Accept": data.draw(st.sampled_from(ACCEPTS)),
                   "Content-Type": data.draw(st.sampled_from(CONTENT_TYPES + PATCH_TYPES))}
        answer = raw.request(method, path + _query(params), body, headers, stream=True)
        answered(ledger, f"{method} {path[:200]}{_query(params)[:200]}", method, answer)
        if method == "POST" and answer.code == 201:
            with contextlib.suppress(ValueError, KeyError, AttributeError):
                note_created(ledger, answer, path)

    with nothing_half_written(raw, http_apiserver[2], ledger):
        request()


def test_fuzz_patches_updates_and_deletes(raw: RawHttp, fuzz_ns: str,
                                          http_apiserver: tuple[ApiServer, int, Path]) -> None:
    ledger = Ledger()
    deployments = f"/apis/apps/v1/namespaces/{fuzz_ns}/deployments"
    target = _valid("deployments", "target")
    answer = raw.request("POST", deployments + "?fieldManager=fuzz", _json(target))
    assert answer.code == 201, answer.body
    stored = orjson.loads(answer.body)
    ledger.created.add(stored["metadata"]["uid"])
    ledger.objects.add(f"{deployments}/target")
    pods = f"/api/v1/namespaces/{fuzz_ns}/pods"
    answer = raw.request("POST", pods, _json(_valid("pods", "target")))
    assert answer.code == 201, answer.body
    ledger.created.add(orjson.loads(answer.body)["metadata"]["uid"])
    ledger.objects.add(f"{pods}/target")
    subresource_bodies = st.one_of(values, st.fixed_dictionaries({}, optional={
        "apiVersion": st.sampled_from(["v1", "policy/v1", "x"]), "kind": st.sampled_from(["Binding", "Eviction"]),
        "metadata": st.one_of(values, st.fixed_dictionaries({"name": st.sampled_from(["target", "other", ""])})),
        "target": st.one_of(values, st.fixed_dictionaries({"name": any_text.filter(_encodable)})),
        "deleteOptions": values}))
    pointers = st.sampled_from(["/spec/replicas", "/metadata/labels/a", "/spec/template/spec/containers/0/image",
                                "/spec/template/spec/containers/-", "/metadata/name", "/metadata/uid", "", "/",
                                "/spec/template/spec/containers/9", "/a~1b", "/~2", "/status", "/kind",
                                "/metadata/managedFields", "/spec/selector/matchLabels"])
    operation = st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "nope"]), "path": pointers},
        optional={"value": values, "from": pointers})
    directives = st.sampled_from([
        {"$patch": "delete"}, {"$patch": "replace"}, {"$patch": "nope"}, {"$retainKeys": ["a"]},
        {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "x"}], "containers": [
            {"name": "x", "$patch": "delete"}]}}}},
        {"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}},
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["b"]}},
        {"spec": {"template": {"spec": {"containers": {"$patch": "delete"}}}}},
        {"metadata": {"managedFields": [{"manager": 1}]}}, {"spec": {"replicas": "three"}},
        {"metadata": {"name": "renamed"}}, {"apiVersion": "v2"}])

    @fuzz_settings(200)
    @given(st.data())
    def request(data: DataObject) -> None:
        what = data.draw(st.sampled_from(["patch", "patch", "patch", "update", "delete", "scale", "status",
                                          "binding", "eviction"]))
        name = data.draw(st.sampled_from(["target", "target", "target", "missing"]))
        params = data.draw(queries)
        params.pop("watch", None)
        path = f"{deployments}/{name}"
        headers: dict[str, str] = {}
        body: bytes | None
        method = "PATCH"
        if what in ("patch", "scale", "status"):
            content_type = data.draw(st.sampled_from([*PATCH_TYPES, "application/json", "text/plain", ""]))
            headers["Content-Type"] = content_type
            if "json-patch" in content_type:
                patch: Any = data.draw(st.one_of(st.lists(operation, max_size=4), values))
            elif "apply" in content_type:
                patch = dict(target, **data.draw(st.dictionaries(st.sampled_from(["spec", "metadata", "kind",
                                                                                  "apiVersion", "status", "x"]),
                                                                 values, max_size=2)))
            else:
                patch = data.draw(st.one_of(directives, values, st.dictionaries(any_text, values, max_size=3)))
            body = _json(patch)
            if data.draw(st.integers(0, 9)) == 0:
                body = data.draw(st.binary(max_size=200))
            if what != "patch":
                path += f"/{what}"
        elif what in ("binding", "eviction"):  # POSTed to the pod's subresource; a dry run leaves it be
            method, path = "POST", f"{pods}/{name}/{what}"
            body = _json(data.draw(subresource_bodies))
            headers["Content-Type"] = "application/json"
            params["dryRun"] = "All"
        elif what == "update":
            method = "PUT"
            doc = json.loads(json.dumps(stored))
            doc["metadata"]["resourceVersion"] = data.draw(st.sampled_from(
                ["", stored["metadata"]["resourceVersion"], "1", "-1", "x", "9" * 25]))
            doc["metadata"]["name"] = data.draw(st.sampled_from([name, "other", ""]))
            doc["spec"]["replicas"] = data.draw(st.one_of(st.integers(-2, 3), values))
            body = _json(doc)
            headers["Content-Type"] = "application/json"
        else:
            method = "DELETE"
            options = data.draw(st.one_of(st.none(), values, st.fixed_dictionaries({}, optional={
                "gracePeriodSeconds": st.one_of(st.integers(), values),
                "propagationPolicy": st.sampled_from(["Orphan", "Background", "Nope", ""]),
                "preconditions": st.one_of(values, st.fixed_dictionaries({}, optional={
                    "uid": st.sampled_from(["other", stored["metadata"]["uid"]]),
                    "resourceVersion": st.sampled_from(["1", "x"])})),
                "dryRun": st.one_of(st.just(["All"]), values), "kind": st.just("DeleteOptions")})))
            body = None if options is None else _json(options)
            params["dryRun"] = "All"  # the target stays for the rest of the run
        answer = raw.request(method, path + _query(params), body, headers)
        answered(ledger, f"{what} {method} {path} {_query(params)[:200]} {(body or b'')[:200]!r}", method, answer)

    with nothing_half_written(raw, http_apiserver[2], ledger):
        request()


def test_fuzz_lists_and_watches(raw: RawHttp, fuzz_ns: str, http_apiserver: tuple[ApiServer, int, Path]) -> None:
    ledger = Ledger()
    selectors = st.one_of(st.just(""), any_text.filter(_encodable), st.sampled_from(
        ["a=b", "a in (b,c)", "!a", "a!=", "metadata.name=target", "spec.nodeName=x", "status.phase==1",
         "a=" + "b" * 100_000, ",,,", "a=(", "x.y.z=1", "metadata.namespace!=", "a notin ()", "a,b,,c",
         "=", "==", "!=", "a=b=c", "a in", "\u00e9=\u00e9"]))

    @fuzz_settings(150)
    @given(st.data())
    def request(data: DataObject) -> None:
        resource = data.draw(st.sampled_from(["configmaps", "pods", "deployments"]))
        prefix = RESOURCES[resource]
        where = data.draw(st.sampled_from([f"/namespaces/{fuzz_ns}", "", "/namespaces/zz"]))
        params = {"labelSelector": data.draw(selectors), "fieldSelector": data.draw(selectors),
                  **data.draw(queries)}
        watching = data.draw(st.booleans())
        if watching:
            params["watch"] = "true"
            params["timeoutSeconds"] = "1"
        headers = {"Accept": data.draw(st.sampled_from(ACCEPTS))}
        answer = raw.request("GET", f"{prefix}{where}/{resource}{_query(params)}", None, headers, stream=True)
        answered(ledger, f"{'watch' if watching else 'list'} {resource} {_query(params)[:300]}", "GET", answer)

    with nothing_half_written(raw, http_apiserver[2], ledger):
        request()


def test_oversized_and_lying_bodies_are_refused(raw: RawHttp, fuzz_ns: str) -> None:
    """A body over 3 MiB is 413 whatever it holds; a body that ends early is not a hang."""
    path = f"/api/v1/namespaces/{fuzz_ns}/configmaps"
    huge = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"huge"},"data":{"a":"' + b"x" * MAX_BODY + b'"}}'
    answer = raw.request("POST", path, huge, {"Content-Type": "application/json"})
    assert answer.code == 413 and orjson.loads(answer.body)["reason"] == "RequestEntityTooLarge"
    conn = http.client.HTTPConnection("127.0.0.1", raw.port, timeout=TIMEOUT)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", "100")
        conn.endheaders(b'{"apiVersion":')  # and then nothing: the client went away
    finally:
        conn.close()
    assert raw.request("GET", f"{path}/huge").code == 404
    assert raw.request("GET", "/version").code == 200
