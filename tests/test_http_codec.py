"""The HTTP API's fast JSON paths give exactly what the plain ones give.

A list's items are spliced in as per-object JSON found again by version, watch
lines likewise, Table rows convert only what they show, and times of whole
seconds skip json_format: each must be byte-identical to dumping the dict that
proto/manifest.py's `to_dict` builds, or clients would see the difference. And
request bodies decoded straight into messages (manifests.from_manifest) must give
manifest.from_dict's object, or its very error, for any manifest at all.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from datetime import date
from typing import Any

import orjson
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from controlplane import printers
from controlplane.apiserver.http import codec, manifests
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.storage import Stored
from proto import core_pb2, kinds, manifest, options_pb2
from proto.errors import ApiError, Invalid

PODS = kinds.resolve("pods")


def stored(pod: core_pb2.Pod) -> core_pb2.Pod:
    """The pod as read back from its bytes (maps iterate in upb's order, which reading sets)."""
    read = core_pb2.Pod()
    read.ParseFromString(pod.SerializeToString())
    return read


def a_pod(i: int) -> core_pb2.Pod:
    pod = manifest.from_dict({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"web-{i}", "namespace": "shop", "uid": f"uid-{i}", "resourceVersion": str(100 + i),
                     "creationTimestamp": "2026-11-24T05:53:01Z", "labels": {"app": "web", "n": str(i)},
                     "annotations": {"note": "ünïcode \"quoted\""},
                     "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                                        "time": "2026-11-24T05:53:01Z", "fieldsType": "FieldsV1",
                                        "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}}}]},
        "spec": {"containers": [{"name": "web", "image": "nginx", "args": ["-g", "daemon off;"],
                                 "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                 "resources": {"limits": {"cpu": "1", "memory": "64Mi"}},
                                 "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                                 "livenessProbe": {"tcpSocket": {"port": 8080}}}],
                 "terminationGracePeriodSeconds": 30, "hostNetwork": False},
        "status": {"phase": "Running", "startTime": "2026-11-24T05:53:02Z",
                   "conditions": [{"type": "Ready", "status": "True"}]},
    })
    assert isinstance(pod, core_pb2.Pod)
    return pod


def test_object_dict_is_to_dict() -> None:
    pod = a_pod(1)
    assert codec.object_dict(pod) == manifest.to_dict(pod)
    assert orjson.dumps(codec.object_dict(pod)) == orjson.dumps(manifest.to_dict(pod))
    secret = manifest.from_dict({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                                 "data": {"k": "aGVsbG8="}, "type": "Opaque"})
    assert codec.object_dict(secret) == manifest.to_dict(secret)
    assert codec.metadata_dict(pod) == manifest.to_dict(pod)["metadata"]
    assert codec.metadata_dict(core_pb2.Pod()) == {}


@pytest.mark.parametrize("seconds, nanos", [(0, 0), (1_700_000_000, 0), (1_700_000_000, 5000),
                                            (253_402_300_799, 0), (-1, 0)])
def test_times_are_json_formats(seconds: int, nanos: int) -> None:
    stamp = Timestamp(seconds=seconds, nanos=nanos)
    assert codec._timestamp(stamp) == stamp.ToJsonString()


def test_a_list_body_is_the_dumped_list() -> None:
    pods = [a_pod(i) for i in range(5)]
    raw = [p.SerializeToString() for p in pods]
    metadata = {"resourceVersion": "42", "continue": "abc", "remainingItemCount": 3}
    plain = orjson.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": metadata,
                          "items": [manifest.to_dict(stored(p)) for p in pods]})
    assert codec.list_body(PODS, raw, metadata) == plain  # encoded
    assert codec.list_body(PODS, raw, metadata) == plain  # found again
    assert codec.list_body(PODS, [], {"resourceVersion": "1"}) == orjson.dumps(
        {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})


def test_a_watch_line_is_the_dumped_event() -> None:
    pod = a_pod(7)
    line = codec.watch_line("MODIFIED", PODS, pod.SerializeToString())
    assert line == orjson.dumps({"type": "MODIFIED", "object": manifest.to_dict(stored(pod))}) + b"\n"


def test_replicas_share_their_spec_json_and_nothing_else() -> None:
    """Pods of one template (one spec per node) encode as each would alone; other specs are not mixed in."""
    pods = [stored(a_pod(i)) for i in range(6)]
    for i, pod in enumerate(pods):
        pod.spec.node_name = f"node-{i % 2}"
    pods[5].spec.containers[0].image = "nginx:2"
    for pod in pods + pods:  # the second round finds every spec
        assert codec.object_json(pod) == orjson.dumps(codec.object_dict(pod))
    specs = codec._SharedSpecs(max_entries=2)
    for pod in pods:
        assert specs.encode(pod.spec) == orjson.dumps(codec.object_dict(pod.spec))
    assert orjson.loads(specs.encode(pods[5].spec))["containers"][0]["image"] == "nginx:2"


def test_encoded_objects_are_found_by_version_and_bounded() -> None:
    cache = codec.EncodedObjects(max_bytes=3_000)
    first, changed = a_pod(1), a_pod(1)
    changed.metadata.resource_version = "999"
    one = cache.encode(PODS, first.SerializeToString())
    assert cache.encode(PODS, first.SerializeToString()) is one  # the same version: found, not encoded
    other = cache.encode(PODS, changed.SerializeToString())
    assert orjson.loads(other)["metadata"]["resourceVersion"] == "999"
    for i in range(10):
        cache.encode(PODS, a_pod(i).SerializeToString())
    assert 0 < cache.size <= 3_000  # the least recently used went
    assert cache.encode(PODS, first.SerializeToString()) is not one


@pytest.mark.parametrize("include", ["None", "Metadata", "Object"])
def test_table_rows_are_the_printers_table(include: str) -> None:
    pods = [a_pod(i) for i in range(3)]
    rendering = codec.Rendering(codec.AS_TABLE, include)
    at = printers.generate_table(PODS, pods).to_dict(include)  # type: ignore[arg-type]
    ours = codec.table(PODS, pods, rendering)
    # Cells come from the printers either way (AGE moves with the clock); the objects are what differ.
    for table in (at, ours):
        for row in table["rows"]:
            row["cells"] = len(row["cells"])
    assert orjson.dumps(ours) == orjson.dumps(at)


# ---------------------------------------------------------------- manifests → objects


def _outcome(decode: Callable[[], Message]) -> tuple[Any, ...]:
    try:
        obj = decode()
    except ApiError as err:
        return type(err).__name__, str(err), getattr(err, "causes", None)
    return "ok", obj.SerializeToString(deterministic=True)


def _random_object(kind: kinds.Kind, rng: random.Random) -> Message:
    """Some of every field of the kind set, recursively, with values of the field's kind."""
    def scalar(fd: Any, quantity: bool = False) -> Any:
        options = fd.GetOptions().Extensions
        if quantity or options[options_pb2.quantities]:
            return rng.choice(["1", "250m", "1Gi"])
        if options[options_pb2.int_or_string]:
            return rng.choice(["80", "http", "25%"])
        return {FieldDescriptor.TYPE_STRING: lambda: rng.choice(["a", "ünï", ""]),
                FieldDescriptor.TYPE_BOOL: lambda: rng.random() < 0.5,
                FieldDescriptor.TYPE_BYTES: lambda: b"hi"}.get(fd.type, lambda: rng.randrange(0, 2**31))()

    def fill_message(sub: Any, depth: int) -> None:
        if sub.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
            sub.seconds, sub.nanos = rng.randrange(2**31), rng.choice([0, 5000])
        elif manifest.is_raw_json(sub.DESCRIPTOR):
            sub.raw = b'{"f:spec":{}}'
        else:
            sub.SetInParent()
            fill(sub, depth + 1)

    def fill(msg: Any, depth: int) -> None:
        for fd in msg.DESCRIPTOR.fields:
            if rng.random() < 0.4 or depth > 5:
                continue
            if fd.type != FieldDescriptor.TYPE_MESSAGE:
                if fd.is_repeated:
                    getattr(msg, fd.name).extend([scalar(fd) for _ in range(rng.randrange(3))])
                else:
                    setattr(msg, fd.name, scalar(fd))
            elif fd.message_type.GetOptions().map_entry:
                value_fd = fd.message_type.fields_by_name["value"]
                for i in range(rng.randrange(3)):
                    if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                        fill_message(getattr(msg, fd.name)[f"k{i}"], depth)
                    else:
                        getattr(msg, fd.name)[f"k{i}"] = scalar(value_fd, fd.GetOptions().Extensions[
                            options_pb2.quantities])
            else:
                for _ in range(rng.randrange(1, 3) if fd.is_repeated else 1):
                    fill_message(getattr(msg, fd.name).add() if fd.is_repeated else getattr(msg, fd.name), depth)
    obj = kind.message()
    fill(obj, 0)
    return obj


_ODD: list[Any] = [None, -1, 2**40, 2**70, 1.5, 2.0, True, "", "12", "1Gi", "nope", [], {}, [None], {"k": None},
                   {"k": 1}, "\udc80", "2024-01-01T00:00:00Z", ["a", None], [{}]]


def _spoil(data: Any, rng: random.Random) -> Any:
    """Some values of a manifest swapped for odd ones: wrong types, nulls, lone surrogates, unknown fields."""
    if isinstance(data, dict):
        spoiled = {k: _spoil(v, rng) for k, v in data.items()}
        if spoiled and rng.random() < 0.3:
            spoiled[rng.choice(list(spoiled))] = rng.choice(_ODD)
        return spoiled
    if isinstance(data, list):
        return [rng.choice(_ODD) if rng.random() < 0.1 else _spoil(v, rng) for v in data]
    return data


@pytest.mark.parametrize("kind", kinds.KINDS, ids=lambda k: k.resource)
def test_from_manifest_is_manifest_from_dict(kind: kinds.Kind) -> None:
    """The fast decoder gives manifest.py's object for every manifest, and its error for every bad one."""
    rng = random.Random(kind.resource)
    for _ in range(25):
        data = manifest.to_dict(_random_object(kind, rng))
        for candidate in (data, _spoil(data, rng)):
            want = _outcome(lambda c=candidate: manifest.from_dict(copy.deepcopy(c), kind))  # type: ignore[misc]
            for _again in range(2):  # the second finds its spec decoded already
                fast = _outcome(lambda c=candidate: manifests.from_manifest(kind, copy.deepcopy(c)))  # type: ignore[misc]
                assert fast == want


def test_a_spec_found_by_its_json_is_only_ever_the_same_value() -> None:
    """Values orjson would write alike (YAML's NaN and null, a date and its text) are not mistaken for each other."""
    def pod(grace: Any, node: Any) -> dict[str, Any]:
        return {"metadata": {"name": "p"}, "spec": {"terminationGracePeriodSeconds": grace, "nodeName": node}}
    for first, second in ((pod(None, "n"), pod(float("nan"), "n")), (pod(30, "2024-01-01"), pod(30, date(2024, 1, 1))),
                          (pod(30, "n"), pod(30.0, "n")), (pod(True, "n"), pod(1, "n"))):
        for data in (first, second, first, second):
            want = _outcome(lambda d=data: manifest.from_dict(copy.deepcopy(d), PODS))  # type: ignore[misc]
            assert _outcome(lambda d=data: manifests.from_manifest(PODS, copy.deepcopy(d))) == want  # type: ignore[misc]


def test_from_manifest_refusals_name_the_field() -> None:
    with pytest.raises(Invalid) as bad:
        manifests.from_manifest(PODS, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": 5}]}})
    assert bad.value.causes == [("spec.containers[0].name", "expected a string, got number")]
    with pytest.raises(Invalid):
        manifests.from_manifest(PODS, {"spec": {"containers": [{"name": "c",
                                                                "resources": {"limits": {"cpu": "lots"}}}]}})
    pod = manifests.from_manifest(PODS, {"metadata": {"name": "p", "creationTimestamp": None},
                                         "spec": {"nodeName": "n"}})
    assert (pod.api_version, pod.kind, pod.metadata.name) == ("v1", "Pod", "p")  # type: ignore[attr-defined]


# ---------------------------------------------------------------- stored bytes → list items


@pytest.mark.parametrize("revision", [1, 127, 128, 99_999, 2**63 - 1])
def test_a_list_item_carries_its_version_as_protobuf_would_write_it(revision: int) -> None:
    """Registry._with_version writes metadata.resourceVersion's bytes by hand: the same bytes, for every kind."""
    for kind in kinds.SERVED:
        suffix = kind.message()
        suffix.metadata.resource_version = str(revision)  # type: ignore[attr-defined]
        stored = Stored(b"key", b"\x0a\x03\x0a\x01x", revision)  # metadata.name "x", as etcd holds it
        item = Registry._with_version(kind, stored)
        assert item == stored.value + suffix.SerializeToString()
        read = codec.parse(kind, item)
        assert (read.metadata.name, read.metadata.resource_version) == ("x", str(revision))  # type: ignore[attr-defined]


def test_decoded_specs_are_bounded_by_their_bytes() -> None:
    specs = manifests._SharedSpecs(max_bytes=2_000)
    for i in range(20):
        pod = core_pb2.Pod()
        specs.fill(pod.spec, {"nodeName": f"node-{i}", "containers": [{"name": "c", "image": "nginx"}]})
        assert pod.spec.node_name == f"node-{i}"
        assert 0 < specs.size <= 2_000
    huge = core_pb2.Pod()
    specs.fill(huge.spec, {"nodeName": "n" * 1_000})  # over an eighth of the table: decoded, not kept
    assert huge.spec.node_name == "n" * 1_000 and specs.size <= 2_000
