"""The HTTP API's fast JSON encoders give exactly the bytes of the plain ones.

A list's items are spliced in as per-object JSON found again by version, watch
lines likewise, Table rows convert only what they show, and times of whole
seconds skip json_format: each must be byte-identical to dumping the dict that
proto/manifest.py's `to_dict` builds, or clients would see the difference.
"""

from __future__ import annotations

import orjson
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from controlplane import printers
from controlplane.apiserver.http import codec
from proto import core_pb2, kinds, manifest

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
