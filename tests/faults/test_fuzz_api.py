"""Fuzzing: hostile requests to a live apiserver.

Requests are sent as raw bytes on the gRPC method paths, so nothing on the
client side tidies them: random bytes as the whole request, requests whose
strings are not UTF-8, objects that are random bytes, objects corrupted at one
byte, huge or deeply nested objects, odd-but-parseable objects from the
manifest fuzzer, updates and deletes with made-up resourceVersions, uids and
grace periods, lists and watches with made-up selectors, limits and tokens.

Every answer must be a success or a client error (INVALID_ARGUMENT, NOT_FOUND,
ABORTED, ...), never INTERNAL or UNKNOWN (a crash inside the server) and
never UNAVAILABLE (the server died). After each run the apiserver still
answers, lists and watches, and every object that appeared during the run is
one whose create the client was told succeeded: nothing half-written.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.strategies import DataObject

from client.api import CHANNEL_OPTIONS
from proto import apiserver_pb2, core_pb2, kinds, manifest
from proto.errors import ApiError
from tests.faults.fuzzing import any_text, fuzz_settings, hostile_manifests
from tests.faults.support import FaultControlPlane

SERVICE = "/flotilla.api.ApiServer/"
# A client's mistake, answered as such. Anything else (INTERNAL, UNKNOWN, UNAVAILABLE) is a server fault.
CLIENT_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
                 grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE,
                 grpc.StatusCode.RESOURCE_EXHAUSTED}
RESOURCES = ["pods", "configmaps", "services", "deployments", "secrets", "namespaces", "replicasets"]
CHECKED = ["pods", "configmaps", "services", "deployments", "secrets", "namespaces", "replicasets"]


@dataclass
class Ledger:
    """What the fuzzer was told: uids of objects created, and every status code seen."""

    created: set[str] = field(default_factory=set)
    # (resource, namespace, name) of what was created, removed after the run: a fuzzed Deployment
    # left behind would have a later test's controller manager make pods for it.
    objects: set[tuple[str, str, str]] = field(default_factory=set)
    codes: Counter[str] = field(default_factory=Counter)


class RawApi:
    """The apiserver's methods taking and returning bytes: nothing checks a request before the server."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)

    def call(self, method: str, request: bytes, timeout: float = 10.0) -> tuple[grpc.StatusCode, bytes]:
        stub = self.channel.unary_unary(SERVICE + method)
        try:
            return grpc.StatusCode.OK, stub(request, timeout=timeout)
        except grpc.RpcError as err:
            return err.code(), (err.details() or "").encode()

    def watch_first(self, request: bytes, timeout: float = 0.3) -> grpc.StatusCode:
        """Open a watch and read its first event (a quiet, valid watch ends at the deadline)."""
        stream = self.channel.unary_stream(SERVICE + "Watch")(request, timeout=timeout)
        try:
            next(iter(stream))
            return grpc.StatusCode.OK
        except StopIteration:
            return grpc.StatusCode.OK
        except grpc.RpcError as err:
            return err.code()
        finally:
            stream.cancel()

    def close(self) -> None:
        self.channel.close()


@pytest.fixture(scope="module")
def api(fault_plane: FaultControlPlane) -> Iterator[RawApi]:
    raw = RawApi(fault_plane.address)
    yield raw
    raw.close()


@pytest.fixture(scope="module")
def fuzz_ns(api: RawApi) -> str:
    name = f"fuzz-{uuid.uuid4().hex[:8]}"
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = name
    code, _ = api.call("Create", apiserver_pb2.CreateRequest(resource="namespaces",
                                                             object=ns.SerializeToString()).SerializeToString())
    assert code == grpc.StatusCode.OK
    return name


def uids(api: RawApi) -> set[str]:
    """Every uid of the fuzzed resources, in every namespace."""
    found: set[str] = set()
    for resource in CHECKED:
        code, raw = api.call("List", apiserver_pb2.ListRequest(resource=resource).SerializeToString())
        assert code == grpc.StatusCode.OK, f"list {resource} after fuzzing: {code} {raw!r}"
        for item in apiserver_pb2.ListReply.FromString(raw).items:
            obj = kinds.resolve(resource).message()
            obj.ParseFromString(item)
            found.add(obj.metadata.uid)  # type: ignore[attr-defined]
    return found


def answered(ledger: Ledger, what: str, code: grpc.StatusCode, reply: bytes) -> None:
    ledger.codes[code.name] += 1
    assert code == grpc.StatusCode.OK or code in CLIENT_ERRORS, f"{what}: {code.name} {reply[:300]!r}"


@contextlib.contextmanager
def nothing_half_written(api: RawApi, fuzz_ns: str, ledger: Ledger) -> Iterator[None]:
    """After the block: the server answers, lists and watches, and only acknowledged objects are new."""
    before = uids(api)
    yield
    code, _ = api.call("Version", b"")
    assert code == grpc.StatusCode.OK, "the apiserver stopped answering"
    code = api.watch_first(apiserver_pb2.WatchRequest(resource="namespaces").SerializeToString())
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED), f"watch after fuzzing: {code}"
    new = uids(api) - before
    assert new <= ledger.created, f"objects stored though their create failed: {new - ledger.created}"
    print(f"\n  fuzz answers: {dict(ledger.codes)}")
    for resource, namespace, name in ledger.objects:
        api.call("Delete", apiserver_pb2.DeleteRequest(resource=resource, namespace=namespace, name=name,
                                                       grace_period_seconds=0).SerializeToString())


def _object_bytes(data: DataObject, resource: str, namespace: str) -> bytes:
    """An object for `resource`: random, corrupted, huge, deep, not UTF-8, or odd but parseable."""
    kind = kinds.resolve(resource)
    obj = kind.message()
    meta = obj.metadata  # type: ignore[attr-defined]
    meta.name, meta.namespace = f"f{data.draw(st.integers(0, 30))}", namespace if kind.namespaced else ""
    valid = obj.SerializeToString()
    how = data.draw(st.sampled_from(["random", "corrupt", "huge", "deep", "not-utf8", "manifest", "name"]))
    if how == "random":
        return data.draw(st.binary(max_size=300))
    if how == "corrupt":
        at = data.draw(st.integers(0, max(0, len(valid) - 1)))
        return valid[:at] + data.draw(st.binary(min_size=1, max_size=3)) + valid[at + 1:]
    if how == "huge":
        if resource == "configmaps":
            cm = core_pb2.ConfigMap()
            cm.CopyFrom(obj)  # type: ignore[arg-type]
            cm.data["big"] = "x" * data.draw(st.sampled_from([1_000_000, 2_000_000]))
            return cm.SerializeToString()
        meta.labels["big"] = "x" * 300_000
        return obj.SerializeToString()
    if how == "deep":
        # Length-delimited field 15 inside field 15 ... (protobuf's own nesting limit is 100).
        inner = b""
        for _ in range(data.draw(st.sampled_from([10, 200, 2_000]))):
            inner = b"\x7a" + _varint(len(inner)) + inner
        return valid + inner
    if how == "not-utf8":
        return valid.replace(meta.name.encode(), b"\xff\xfe" + data.draw(st.binary(max_size=3)), 1)
    if how == "manifest":
        with contextlib.suppress(ApiError):
            parsed = manifest.from_dict(data.draw(hostile_manifests()).build())
            parsed.metadata.namespace = namespace  # type: ignore[attr-defined]
            return parsed.SerializeToString()
        return valid
    meta.name = data.draw(any_text.filter(_encodable))
    return obj.SerializeToString()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_utf8_request(request: bytes, marker: str) -> bytes:
    """The request with `marker` (a string field's value) replaced by bytes that are not UTF-8."""
    return request.replace(marker.encode(), b"\xc3\x28" + marker.encode()[2:], 1)


def test_fuzz_creates(api: RawApi, fuzz_ns: str) -> None:
    ledger = Ledger()

    @fuzz_settings(150)
    @given(st.data())
    def create(data: DataObject) -> None:
        resource = data.draw(st.sampled_from(RESOURCES))
        namespace = data.draw(st.sampled_from([fuzz_ns, fuzz_ns, "", "no-such-ns", "Bad_NS"]))
        request = apiserver_pb2.CreateRequest(resource=resource, namespace=namespace,
                                              object=_object_bytes(data, resource, namespace),
                                              dry_run=data.draw(st.booleans())).SerializeToString()
        shape = data.draw(st.sampled_from(["as-is", "as-is", "as-is", "random", "not-utf8", "truncated"]))
        if shape == "random":
            request = data.draw(st.binary(max_size=200))
        elif shape == "not-utf8":
            request = _not_utf8_request(request, resource)
        elif shape == "truncated":
            request = request[:data.draw(st.integers(0, max(0, len(request) - 1)))]
        code, reply = api.call("Create", request)
        answered(ledger, f"create {resource} ({shape})", code, reply)
        if code == grpc.StatusCode.OK and resource in CHECKED:
            obj = kinds.resolve(resource).message()
            obj.ParseFromString(apiserver_pb2.ObjectReply.FromString(reply).object)
            meta = obj.metadata  # type: ignore[attr-defined]
            ledger.created.add(meta.uid)
            ledger.objects.add((resource, meta.namespace, meta.name))

    with nothing_half_written(api, fuzz_ns, ledger):
        create()


def test_fuzz_updates_deletes_lists_and_watches(api: RawApi, fuzz_ns: str) -> None:
    ledger = Ledger()
    target = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    target.metadata.name, target.metadata.namespace = "target", fuzz_ns
    target.data["v"] = "0"
    code, reply = api.call("Create", apiserver_pb2.CreateRequest(
        resource="configmaps", namespace=fuzz_ns, object=target.SerializeToString()).SerializeToString())
    assert code == grpc.StatusCode.OK
    stored = core_pb2.ConfigMap.FromString(apiserver_pb2.ObjectReply.FromString(reply).object)
    ledger.created.add(stored.metadata.uid)
    versions = st.one_of(st.just(""), any_text.filter(_encodable), st.integers(-(2**70), 2**70).map(str),
                         st.just(stored.metadata.resource_version), st.just("0"))
    selectors = st.one_of(st.just(""), any_text.filter(_encodable), st.sampled_from(
        ["a=b", "a in (b,c)", "!a", "a!=", "metadata.name=target", "spec.nodeName=x", "status.phase==1",
         "a=" + "b" * 100_000, ",,,", "a=(", "x.y.z=1"]))

    @fuzz_settings(150)
    @given(st.data())
    def request(data: DataObject) -> None:
        method = data.draw(st.sampled_from(["Update", "Delete", "List", "Watch", "Get", "Bind"]))
        resource = data.draw(st.sampled_from(["configmaps", "configmaps", "pods", "namespaces"]))
        if method == "Update":
            obj = core_pb2.ConfigMap()
            obj.CopyFrom(stored)
            obj.metadata.resource_version = data.draw(versions)
            obj.metadata.uid = data.draw(st.sampled_from([stored.metadata.uid, "", "other-uid"]))
            obj.metadata.name = data.draw(st.sampled_from(["target", "target", "missing", ""]))
            obj.data["v"] = data.draw(st.text(max_size=5).filter(_encodable))
            body = apiserver_pb2.UpdateRequest(
                resource=resource, namespace=fuzz_ns, object=obj.SerializeToString(),
                subresource=data.draw(st.sampled_from(["", "status", "scale", "binding", "nope"])),
                dry_run=data.draw(st.booleans())).SerializeToString()
        elif method == "Delete":
            delete = apiserver_pb2.DeleteRequest(
                resource=resource, namespace=fuzz_ns, name=data.draw(st.sampled_from(["target", "missing", ""])),
                propagation_policy=data.draw(st.sampled_from(["", "Orphan", "Foreground", "Nope"])),
                uid=data.draw(st.sampled_from(["", "other-uid"])), resource_version=data.draw(versions),
                dry_run=data.draw(st.booleans()))
            if data.draw(st.booleans()):
                delete.grace_period_seconds = data.draw(st.integers(-(2**63), 2**63 - 1))
            body = delete.SerializeToString()
        elif method in ("List", "Watch"):
            message = apiserver_pb2.ListRequest if method == "List" else apiserver_pb2.WatchRequest
            fields: dict[str, Any] = {
                "resource": resource, "namespace": data.draw(st.sampled_from([fuzz_ns, "", "zz"])),
                "label_selector": data.draw(selectors), "field_selector": data.draw(selectors)}
            if method == "List":
                fields["limit"] = data.draw(st.one_of(st.sampled_from([0, 1, 2, -1]), st.integers(-(2**63), 2**63 - 1)))
                fields["continue"] = data.draw(st.one_of(st.just(""), any_text.filter(_encodable), st.sampled_from(
                    ["eyJ2IjogMX0=", "eyJ2IjoxLCJydiI6ImEiLCJzdGFydCI6IiJ9", "e30=", "bnVsbA==", "W10="])))
            else:
                fields["resource_version"] = data.draw(versions)
            body = message(**fields).SerializeToString()
        elif method == "Get":
            body = apiserver_pb2.GetRequest(resource=resource, namespace=fuzz_ns,
                                            name=data.draw(any_text.filter(_encodable))).SerializeToString()
        else:
            binding = core_pb2.Binding()
            binding.metadata.name = data.draw(st.sampled_from(["target", "missing", ""]))
            binding.metadata.uid = data.draw(st.sampled_from(["", "other-uid"]))
            binding.target.name = data.draw(st.text(max_size=10).filter(_encodable))
            body = apiserver_pb2.BindRequest(namespace=fuzz_ns, binding=binding).SerializeToString()
        if data.draw(st.integers(0, 9)) == 0:
            body = data.draw(st.binary(max_size=100))  # not even the request's shape
        elif data.draw(st.integers(0, 9)) == 0:
            body = _not_utf8_request(body, resource)
        if method == "Watch":
            code = api.watch_first(body)
            ledger.codes[code.name] += 1
            assert code in CLIENT_ERRORS or code in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED), \
                f"watch: {code.name}"
            return
        code, reply = api.call(method, body)
        answered(ledger, method, code, reply)

    with nothing_half_written(api, fuzz_ns, ledger):
        request()


@pytest.mark.parametrize("version", ["-1", "9223372036854775807", "99999999999999999999"])
def test_watch_from_an_impossible_resource_version_is_invalid(api: RawApi, fuzz_ns: str, version: str) -> None:
    """Found by the deep profile: int64 overflow answered UNKNOWN, a negative version "too old"."""
    code = api.watch_first(apiserver_pb2.WatchRequest(resource="configmaps", namespace=fuzz_ns,
                                                      resource_version=version).SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
