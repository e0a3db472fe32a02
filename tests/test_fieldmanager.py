"""Server-side apply and managedFields, as kubectl and controllers see them.

The applied configurations named after a recording are the bodies kubectl 1.32
sent for `kubectl apply --server-side` (A_applyss.req.txt) and client-side apply's
create (A_applynew.req.txt); docs/http-api.md says how they were recorded.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import re
from typing import Any

import orjson
import pytest
from google.protobuf.message import Message

from controlplane.apiserver import fieldmanager
from controlplane.apiserver.fieldmanager import ApplyConflict, apply, update
from controlplane.apiserver.http import codec, managedfields, patching
from proto import core_pb2, kinds, manifest
from proto.errors import BadRequest, Conflict
from tests.test_http_codec import _random_object

DEPLOYMENTS = kinds.resolve("deployments")
CONFIGMAPS = kinds.resolve("configmaps")
PODS = kinds.resolve("pods")
T0 = dt.datetime(2026, 12, 6, 18, 0, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=1)
T2 = T0 + dt.timedelta(minutes=2)


def applied_deployment(replicas: int = 2, image: str = "nginx:1.26") -> dict[str, Any]:
    """kubectl's server-side apply body (A_applyss.req.txt)."""
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"labels": {"app": "applied"}, "name": "applied", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "applied"}},
                     "template": {"metadata": {"labels": {"app": "applied"}},
                                  "spec": {"containers": [{"image": image, "name": "nginx",
                                                           "ports": [{"containerPort": 80}]}]}}}}


def stored(obj: dict[str, Any], rv: str = "7") -> dict[str, Any]:
    """The object as the registry hands it back: server fields set, a port's protocol defaulted, status."""
    live = copy.deepcopy(obj)
    live["metadata"].update({"uid": "0b7a", "resourceVersion": rv, "creationTimestamp": "2026-12-06T18:00:00Z"})
    for c in live.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        for port in c.get("ports", []):
            port.setdefault("protocol", "TCP")
    if live["kind"] == "Deployment":
        live["status"] = {"replicas": 1}
    return live


def entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = obj["metadata"].get("managedFields", [])
    return result


def owned(obj: dict[str, Any], manager: str) -> dict[str, Any]:
    [entry] = [e for e in entries(obj) if e["manager"] == manager]
    result: dict[str, Any] = entry["fieldsV1"]
    return result


def holds(obj: dict[str, Any]) -> None:
    """The API can hold the object (managedFields aside, whose FieldsV1 the registry stores as raw JSON)."""
    rest = copy.deepcopy(obj)
    rest["metadata"].pop("managedFields", None)
    manifest.from_dict(rest)


# ---------------------------------------------------------------- apply


def test_apply_creates_a_missing_object_owned_by_the_applier() -> None:
    created = apply(DEPLOYMENTS, None, applied_deployment(), "kubectl", False, now=T0)
    holds(created)
    assert created["spec"] == applied_deployment()["spec"]
    assert entries(created) == [{
        "manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1", "time": "2026-12-06T18:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {"f:matchLabels": {"f:app": {}}},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {'k:{"name":"nginx"}': {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}},
                    }}},
                },
            },
        },
    }]


def test_reapplying_the_same_configuration_changes_nothing() -> None:
    live = stored(apply(DEPLOYMENTS, None, applied_deployment(), "kubectl", False, now=T0))
    again = apply(DEPLOYMENTS, live, applied_deployment(), "kubectl", False, now=T1)
    assert again == live  # not even the timestamp: nothing to write


def test_reapplying_a_change_moves_the_timestamp_and_keeps_server_fields() -> None:
    live = stored(apply(DEPLOYMENTS, None, applied_deployment(), "kubectl", False, now=T0))
    changed = apply(DEPLOYMENTS, live, applied_deployment(replicas=4), "kubectl", False, now=T1)
    holds(changed)
    assert changed["spec"]["replicas"] == 4
    assert changed["metadata"]["uid"] == "0b7a" and changed["metadata"]["resourceVersion"] == "7"
    assert changed["status"] == {"replicas": 1}
    assert changed["spec"]["template"]["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert [e["time"] for e in entries(changed)] == ["2026-12-06T18:01:00Z"]


def test_a_field_dropped_from_the_applied_configuration_is_removed() -> None:
    first = applied_deployment()
    first["metadata"]["labels"]["tier"] = "web"
    first["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    live = stored(apply(DEPLOYMENTS, None, first, "kubectl", False, now=T0))
    second = apply(DEPLOYMENTS, live, applied_deployment(), "kubectl", False, now=T1)
    holds(second)
    assert second["metadata"]["labels"] == {"app": "applied"}
    assert [c["name"] for c in second["spec"]["template"]["spec"]["containers"]] == ["nginx"]
    assert "f:tier" not in owned(second, "kubectl")["f:metadata"]["f:labels"]


def test_a_dropped_field_another_manager_owns_stays() -> None:
    live = stored(apply(DEPLOYMENTS, None, applied_deployment(), "kubectl", False, now=T0))
    # `kubectl label deploy applied tier=web` (a merge patch, recorded as an Update by kubectl-label)
    labelled = copy.deepcopy(live)
    labelled["metadata"]["labels"]["tier"] = "web"
    labelled = update(DEPLOYMENTS, live, labelled, "kubectl-label", now=T1)
    with_tier = applied_deployment()
    with_tier["metadata"]["labels"]["tier"] = "web"
    owned_too = apply(DEPLOYMENTS, labelled, with_tier, "kubectl", False, now=T1)
    # The applier stops applying the label: kubectl-label still owns it, so it stays.
    dropped = apply(DEPLOYMENTS, owned_too, applied_deployment(), "kubectl", False, now=T2)
    assert dropped["metadata"]["labels"] == {"app": "applied", "tier": "web"}
    assert owned(dropped, "kubectl-label") == {"f:metadata": {"f:labels": {"f:tier": {}}}}


def test_changing_a_field_another_manager_owns_is_a_409_naming_it() -> None:
    # Client-side apply created it (A_applynew.req.txt POSTs, recorded as an Update).
    created = update(DEPLOYMENTS, None, stored(applied_deployment(replicas=3)), "kubectl-client-side-apply", now=T0)
    with pytest.raises(ApplyConflict) as caught:
        apply(DEPLOYMENTS, created, applied_deployment(replicas=2), "kubectl", False, now=T1)
    error = caught.value
    assert isinstance(error, Conflict) and error.reason == "Conflict"
    assert str(error) == ('Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: '
                          ".spec.replicas")
    assert error.causes == [(".spec.replicas", 'conflict with "kubectl-client-side-apply" using apps/v1')]


def test_several_conflicts_are_listed_per_manager() -> None:
    created = update(DEPLOYMENTS, None, stored(applied_deployment(replicas=3)), "kubectl-client-side-apply", now=T0)
    with pytest.raises(ApplyConflict) as caught:
        apply(DEPLOYMENTS, created, applied_deployment(replicas=2, image="nginx:1.28"), "kubectl", False, now=T1)
    assert str(caught.value) == (
        'Apply failed with 2 conflicts: conflicts with "kubectl-client-side-apply" using apps/v1:\n'
        "- .spec.replicas\n"
        '- .spec.template.spec.containers[name="nginx"].image')
    assert [field for field, _ in caught.value.causes] == [
        ".spec.replicas", '.spec.template.spec.containers[name="nginx"].image']


def test_applying_the_value_another_manager_set_shares_it() -> None:
    created = update(DEPLOYMENTS, None, stored(applied_deployment(replicas=2)), "kubectl-client-side-apply", now=T0)
    shared = apply(DEPLOYMENTS, created, applied_deployment(replicas=2), "kubectl", False, now=T1)
    assert "f:replicas" in owned(shared, "kubectl")["f:spec"]
    assert "f:replicas" in owned(shared, "kubectl-client-side-apply")["f:spec"]


def test_force_moves_ownership_to_the_applier() -> None:
    created = update(DEPLOYMENTS, None, stored(applied_deployment(replicas=3)), "kubectl-client-side-apply", now=T0)
    forced = apply(DEPLOYMENTS, created, applied_deployment(replicas=2), "kubectl", True, now=T1)
    holds(forced)
    assert forced["spec"]["replicas"] == 2
    assert "f:replicas" in owned(forced, "kubectl")["f:spec"]
    assert "f:replicas" not in owned(forced, "kubectl-client-side-apply")["f:spec"]
    # Apply entries come first, as Kubernetes sorts them.
    assert [(e["manager"], e["operation"]) for e in entries(forced)] == [
        ("kubectl", "Apply"), ("kubectl-client-side-apply", "Update")]


def test_an_update_takes_fields_from_the_applier_who_then_conflicts() -> None:
    live = stored(apply(DEPLOYMENTS, None, applied_deployment(), "kubectl", False, now=T0))
    # `kubectl scale --replicas 5` through the scale subresource
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    scaled = update(DEPLOYMENTS, live, scaled, "kubectl", subresource="scale", now=T1)
    apply_entry = next(e for e in entries(scaled) if e["operation"] == "Apply")
    assert "f:replicas" not in apply_entry["fieldsV1"]["f:spec"]
    scale_entry = next(e for e in entries(scaled) if e["operation"] == "Update")
    assert scale_entry["subresource"] == "scale" and scale_entry["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    with pytest.raises(ApplyConflict, match='conflict with "kubectl" with subresource "scale" using apps/v1: '
                                            r"\.spec\.replicas"):
        apply(DEPLOYMENTS, scaled, applied_deployment(), "kubectl", False, now=T2)


def test_the_first_apply_to_an_object_without_managed_fields_meets_before_first_apply() -> None:
    # An object written before anyone tracked fields (e.g. over gRPC) belongs to "before-first-apply".
    legacy = stored(applied_deployment(replicas=3))
    expected = 'Apply failed with 1 conflict: conflict with "before-first-apply" using apps/v1: .spec.replicas'
    with pytest.raises(ApplyConflict, match=re.escape(expected)):
        apply(DEPLOYMENTS, legacy, applied_deployment(replicas=2), "kubectl", False, now=T1)


def test_apply_refuses_another_kind_version_or_managed_fields() -> None:
    wrong_version = {**applied_deployment(), "apiVersion": "apps/v1beta1"}
    with pytest.raises(BadRequest, match=re.escape("Incorrect version specified in apply patch. Specified patch "
                                                   "version: apps/v1beta1, expected: apps/v1")):
        apply(DEPLOYMENTS, None, wrong_version, "kubectl", False)
    with pytest.raises(BadRequest, match="Incorrect kind specified in apply patch"):
        apply(DEPLOYMENTS, None, {**applied_deployment(), "kind": "ReplicaSet"}, "kubectl", False)
    carrying = applied_deployment()
    carrying["metadata"]["managedFields"] = [{"manager": "me"}]
    with pytest.raises(BadRequest, match=re.escape("metadata.managedFields must be nil")):
        apply(DEPLOYMENTS, None, carrying, "kubectl", False)
    with pytest.raises(BadRequest, match="fieldManager is required"):
        apply(DEPLOYMENTS, None, applied_deployment(), "", False)


def test_last_applied_annotation_apply_is_its_own_manager() -> None:
    # A_applyss.req.txt's second PATCH: kubectl moves the last-applied annotation with its own manager.
    live = stored(apply(DEPLOYMENTS, None, applied_deployment(), "kubectl", False, now=T0))
    annotation = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"},
                               "name": "applied", "namespace": "default"}}
    result = apply(DEPLOYMENTS, live, annotation, "kubectl-last-applied", False, now=T1)
    assert result["spec"] == live["spec"]  # a manager's apply never removes what another applied
    assert owned(result, "kubectl-last-applied") == {
        "f:metadata": {"f:annotations": {"f:kubectl.kubernetes.io/last-applied-configuration": {}}}}


def test_status_is_not_owned_through_the_main_resource() -> None:
    with_status = {**applied_deployment(), "status": {"replicas": 9}}
    created = apply(DEPLOYMENTS, None, with_status, "kubectl", False, now=T0)
    assert "f:status" not in owned(created, "kubectl")


# ---------------------------------------------------------------- update


def test_create_records_the_creator_with_maps_and_list_keys() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "nginx", "namespace": "default", "labels": {"run": "nginx"},
                        "finalizers": ["example.com/keep"]},
           "spec": {"containers": [{"name": "nginx", "image": "nginx",
                                    "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}
    created = update(PODS, None, pod, "kubectl-run", now=T0)
    assert entries(created) == [{
        "manager": "kubectl-run", "operation": "Update", "apiVersion": "v1", "time": "2026-12-06T18:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:finalizers": {'v:"example.com/keep"': {}}, "f:labels": {".": {}, "f:run": {}}},
            "f:spec": {"f:containers": {'k:{"name":"nginx"}': {
                ".": {}, "f:image": {}, "f:name": {},
                "f:ports": {'k:{"containerPort":80,"protocol":"TCP"}': {
                    ".": {}, "f:containerPort": {}, "f:protocol": {}}}}}},
        },
    }]


def test_updates_by_one_manager_merge_into_one_entry() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "default"},
          "data": {"a": "1"}}
    created = update(CONFIGMAPS, None, cm, "kctl", now=T0)
    changed = copy.deepcopy(created)
    changed["data"]["b"] = "2"
    changed = update(CONFIGMAPS, created, changed, "kctl", now=T1)
    assert [(e["manager"], e["time"]) for e in entries(changed)] == [("kctl", "2026-12-06T18:01:00Z")]
    assert owned(changed, "kctl") == {"f:data": {".": {}, "f:a": {}, "f:b": {}}}
    # Another manager changing `a` takes it; removing `b` takes it from everyone.
    edited = copy.deepcopy(changed)
    edited["data"] = {"a": "one"}
    edited = update(CONFIGMAPS, changed, edited, "kubectl-edit", now=T2)
    assert owned(edited, "kctl") == {"f:data": {}}
    assert owned(edited, "kubectl-edit") == {"f:data": {"f:a": {}}}


def test_an_update_that_changes_nothing_leaves_managed_fields_alone() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}}
    created = update(CONFIGMAPS, None, cm, "kctl", now=T0)
    assert update(CONFIGMAPS, created, copy.deepcopy(created), "other", now=T1) == created


def test_a_client_that_drops_managed_fields_does_not_wipe_them_but_an_empty_list_does() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}}
    created = update(CONFIGMAPS, None, cm, "kctl", now=T0)
    unaware = copy.deepcopy(created)
    del unaware["metadata"]["managedFields"]
    assert entries(update(CONFIGMAPS, created, unaware, "old-client", now=T1)) == entries(created)
    reset = copy.deepcopy(created)
    reset["metadata"]["managedFields"] = [{}]
    assert "managedFields" not in update(CONFIGMAPS, created, reset, "kubectl-patch", now=T1)["metadata"]


def test_managed_fields_round_trip_through_fields_v1() -> None:
    paths = {("f:spec", "f:replicas"), ("f:metadata", "f:labels"), ("f:metadata", "f:labels", "f:app"),
             ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"nginx"}'),
             ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"nginx"}', "f:image")}
    tree = fieldmanager.fields_v1(paths)
    assert tree == {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                        'k:{"name":"nginx"}': {".": {}, "f:image": {}}}}}}}
    assert fieldmanager._paths(tree, ()) == paths
    assert fieldmanager.path_string(("f:spec", "f:ports", 'k:{"port":80,"protocol":"TCP"}', "f:name")) == (
        '.spec.ports[port=80,protocol="TCP"].name')
    assert fieldmanager.path_string(("f:metadata", "f:finalizers", 'v:"a.io/x"')) == '.metadata.finalizers[="a.io/x"]'


# ---------------------------------------------------------------- the HTTP API's writes, on messages


def reference_track(kind: kinds.Kind, old: Message | None, new: Message, manager: str,
                    subresource: str) -> Message:
    """What patching.track must give: `update` on both objects' JSON, the entries decoded back into messages."""
    before = codec.object_dict(old) if old is not None else None
    after = update(kind, before, codec.object_dict(new), manager, subresource=subresource, now=T1)
    entries = after.get("metadata", {}).get("managedFields", [])
    meta = manifest.from_dict({"apiVersion": kind.api_version, "kind": kind.kind,
                               "metadata": {"managedFields": entries}}, kind).metadata  # type: ignore[attr-defined]
    tracked = type(new)()
    tracked.CopyFrom(new)
    tracked.metadata.ClearField("managed_fields")  # type: ignore[attr-defined]
    tracked.metadata.managed_fields.extend(meta.managed_fields)  # type: ignore[attr-defined]
    return tracked


def mixed(old: Message, other: Message, rng: random.Random) -> Message:
    """`old` with some fields, at any depth, taken from `other` (or cleared where `other` has none)."""
    new = type(old)()
    new.CopyFrom(old)
    theirs = dict(other.ListFields())
    for fd in {fd for fd, _ in old.ListFields()} | theirs.keys():
        roll = rng.random()
        if roll < 0.5:
            continue
        plain = (fd.message_type is not None and not fd.is_repeated
                 and "raw" not in fd.message_type.fields_by_name)
        if roll < 0.75 and plain and fd in theirs and new.HasField(fd.name):
            getattr(new, fd.name).CopyFrom(mixed(getattr(new, fd.name), theirs[fd], rng))
            continue
        new.ClearField(fd.name)
        if fd in theirs:
            if fd.type == fd.TYPE_MESSAGE and not fd.is_repeated:
                getattr(new, fd.name).CopyFrom(theirs[fd])
            elif fd.is_repeated and fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                getattr(new, fd.name).MergeFrom(theirs[fd])
            elif fd.is_repeated:
                getattr(new, fd.name).extend(theirs[fd])
            else:
                setattr(new, fd.name, theirs[fd])
    return new


@pytest.mark.parametrize("kind", kinds.KINDS, ids=lambda k: k.resource)
def test_track_is_update_on_the_objects_json(kind: kinds.Kind, monkeypatch: pytest.MonkeyPatch) -> None:
    """The HTTP API's bookkeeping on messages records what `update` records on the JSON, for every kind."""
    monkeypatch.setattr(fieldmanager, "timestamp", lambda now=None: "2026-12-06T18:01:00Z")
    rng = random.Random(kind.resource)
    for round_ in range(30):
        subresource = rng.choice(["", "", "status", "scale"])
        first = _random_object(kind, rng)
        if round_ % 3:  # valid entries, as a tracked create leaves them
            first = patching.track(kind, None, first, rng.choice(["kubectl", "kctl"]))
        for old in (None, first):
            new = mixed(first, _random_object(kind, rng), rng) if old is not None else first
            if rng.random() < 0.2:
                new.metadata.ClearField("managed_fields")  # type: ignore[attr-defined]
            manager = rng.choice(["kubectl", "kubectl-edit", "kctl"])
            got = patching.track(kind, old, new, manager, subresource=subresource)
            want = reference_track(kind, old, new, manager, subresource)
            assert got.SerializeToString(deterministic=True) == want.SerializeToString(deterministic=True)


def test_a_template_replicas_creates_record_the_same_fields_each() -> None:
    pods = [manifest.from_dict({"apiVersion": "v1", "kind": "Pod",
                                "metadata": {"name": f"web-{i}", "labels": {"app": "web"}},
                                "spec": {"containers": [{"name": "web", "image": "nginx"}]}}) for i in range(3)]
    pods[2].spec.containers[0].image = "nginx:2"  # type: ignore[attr-defined]
    pods[2].metadata.labels["tier"] = "front"  # type: ignore[attr-defined]
    for pod in pods + pods:  # the second round finds the first two in the table
        got = patching.track(PODS, None, pod, "kctl")
        want = reference_track(PODS, None, pod, "kctl", "")
        assert got.metadata.managed_fields[0].fields_v1.raw == (  # type: ignore[attr-defined]
            want.metadata.managed_fields[0].fields_v1.raw)  # type: ignore[attr-defined]
    tracked = patching.track(PODS, None, pods[2], "kctl")
    fields = orjson.loads(tracked.metadata.managed_fields[0].fields_v1.raw)  # type: ignore[attr-defined]
    assert fields["f:metadata"]["f:labels"] == {".": {}, "f:app": {}, "f:tier": {}}


def test_fields_v1_bytes_are_json_dumps_of_the_tree() -> None:
    for paths in ({("f:metadata", "f:annotations", "f:é")}, {("f:data", "f:a\u007fb")},
                  {("f:data", "f:\u0001")}, {("f:spec", 'k:{"name":"x"}'), ("f:spec", 'k:{"name":"x"}', "f:a")}):
        raw = managedfields.fields_v1_json(frozenset(paths))
        assert raw == manifest.raw_json_bytes(fieldmanager.fields_v1(paths))
        assert managedfields.fields_of(raw) == paths


def test_track_of_empty_and_epoch_values_is_update_on_the_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """Present-but-empty messages and zero times are members (`{}`, the epoch) that the JSON shows too."""
    monkeypatch.setattr(fieldmanager, "timestamp", lambda now=None: "2026-12-06T18:01:00Z")
    base = manifest.from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "1"}},
                               "spec": {"containers": [{"name": "c", "image": "i"}]}})
    assert isinstance(base, core_pb2.Pod)
    variants: list[Message] = []
    for change in ("epoch", "empty-spec", "empty-metadata", "empty-context", "no-labels", "empty-entry"):
        pod = core_pb2.Pod()
        pod.CopyFrom(base)
        if change == "epoch":
            pod.metadata.deletion_timestamp.SetInParent()
        elif change == "empty-spec":
            pod.spec.Clear()
            pod.spec.SetInParent()
        elif change == "empty-metadata":
            pod.metadata.Clear()
            pod.metadata.SetInParent()
        elif change == "empty-context":
            pod.spec.security_context.SetInParent()
        elif change == "no-labels":
            pod.metadata.ClearField("labels")
        else:
            pod.metadata.managed_fields.add(manager="m", operation="Update").fields_v1.SetInParent()
        variants.append(pod)
    for old in [None, base, *variants]:
        for new in [base, *variants]:
            got = patching.track(PODS, old, new, "kctl")
            want = reference_track(PODS, old, new, "kctl", "")
            assert got.SerializeToString(deterministic=True) == want.SerializeToString(deterministic=True)


def test_remembered_field_sets_are_bounded_by_their_paths() -> None:
    table: managedfields.FieldSets[str, int] = managedfields.FieldSets(max_paths=80)
    assert table.put("big", 1, paths=11) == 1 and table.get("big") is None  # over an eighth: made each time
    for i in range(8):
        table.put(f"pod-{i}", i, paths=10)
    assert [table.get(f"pod-{i}") for i in range(8)] == list(range(8))
    table.put("one-more", 8, paths=10)  # full: started afresh
    assert table.get("pod-0") is None and table.get("one-more") == 8 and table.paths == 10
