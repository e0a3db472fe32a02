"""kubectl's protobuf request bodies decode to the objects it means; patch tags are where the HTTP layer looks.

The byte strings are kubectl 1.32's own request bodies, recorded against a
request-logging stub (one recording per command, named above each vector); docs/http-api.md
says what else that recording showed.
"""

from __future__ import annotations

import pytest

from proto import (
    apps_pb2,
    authentication_pb2,
    authorization_pb2,
    core_pb2,
    kinds,
    manifest,
    meta_pb2,
    patchmeta,
    rbac_pb2,
    wire,
)
from proto.errors import BadRequest

# X_create_configmap_cm1_--from-literal_a_b.req.txt
CONFIGMAP = bytes.fromhex(
    "6b3873000a0f0a0276311209436f6e6669674d6170121d0a130a03636d3112001a0022002a0032003800420012060a01"
    "611201621a002200"
)
# X_create_secret_generic_s1_--from-literal_.req.txt
SECRET = bytes.fromhex(
    "6b3873000a0c0a0276311206536563726574121e0a120a02733112001a0022002a0032003800420012060a0161120162"
    "1a001a002200"
)
# X_create_namespace_ns1.req.txt
NAMESPACE = bytes.fromhex(
    "6b3873000a0f0a02763112094e616d657370616365121b0a130a036e733112001a0022002a0032003800420012001a02"
    "0a001a002200"
)
# X_create_service_clusterip_svc1_--tcp_80_8.req.txt
SERVICE = bytes.fromhex(
    "6b3873000a0d0a02763112075365727669636512690a210a047376633112001a0022002a003200380042005a0b0a0361"
    "707012047376633112400a180a0538302d3830120354435018502206080010501a002800120b0a036170701204737663"
    "311a002209436c757374657249503a00420052005a00600068001a020a001a002200"
)
# X_create_role_r1_--verb_get_--resource_pod.req.txt
ROLE = bytes.fromhex(
    "6b3873000a240a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f76311204526f6c6512230a120a02"
    "723112001a0022002a00320038004200120d0a0367657412001a04706f64731a002200"
)
# X_create_quota_q1_--hard_pods_2.req.txt
QUOTA = bytes.fromhex(
    "6b3873000a130a027631120d5265736f7572636551756f746112250a120a02713112001a0022002a0032003800420012"
    "0d0a0b0a04706f647312030a01321a001a002200"
)

# Y_auth_can_i_get_pods_.req.txt: `kubectl auth can-i get pods`
SELF_SUBJECT_ACCESS_REVIEW = bytes.fromhex(
    "6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f7631121753656c665375626a65637441636365"
    "7373526576696577123c0a100a0012001a0022002a00320038004200121e0a1c0a0764656661756c7412036765741a00"
    "22002a04706f647332003a001a08080012001a0020001a002200"
)
# Y_auth_whoami_.req.txt: `kubectl auth whoami` (its first try, authentication.k8s.io/v1)
SELF_SUBJECT_REVIEW = bytes.fromhex(
    "6b3873000a2d0a1861757468656e7469636174696f6e2e6b38732e696f2f7631121153656c665375626a656374526576"
    "696577121a0a100a0012001a0022002a0032003800420012060a040a0012001a002200"
)


@pytest.mark.parametrize(("body", "expected"), [
    (CONFIGMAP, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1"}, "data": {"a": "b"}}),
    (SECRET, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}, "data": {"a": "Yg=="}}),
    (NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1"}, "spec": {}, "status": {}}),
    (SERVICE, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc1", "labels": {"app": "svc1"}},
               "spec": {"ports": [{"name": "80-80", "protocol": "TCP", "port": 80, "targetPort": 80}],
                        "selector": {"app": "svc1"}, "type": "ClusterIP"},
               "status": {"loadBalancer": {}}}),
    (ROLE, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r1"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
    (QUOTA, {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q1"},
             "spec": {"hard": {"pods": "2"}}, "status": {}}),
], ids=["configmap", "secret", "namespace", "service", "role", "quota"])
def test_kubectl_create_bodies_decode_to_what_kubectl_sends_as_json(body: bytes, expected: dict) -> None:
    decoded = wire.decode(body)
    assert decoded == expected
    manifest.from_dict(decoded)  # and the apiserver's manifest codec takes it as it is


@pytest.mark.parametrize(("body", "expected"), [
    (SELF_SUBJECT_ACCESS_REVIEW, {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "metadata": {},
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "get", "resource": "pods"}},
        "status": {}}),
    (SELF_SUBJECT_REVIEW, {
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {},
        "status": {"userInfo": {}}}),
], ids=["auth-can-i", "auth-whoami"])
def test_kubectl_auth_bodies_decode_to_reviews(body: bytes, expected: dict) -> None:
    decoded = wire.decode(body)
    assert decoded == expected
    review = kinds.review(decoded["apiVersion"], decoded["kind"])
    assert review is not None
    assert isinstance(manifest.from_dict(decoded, review), review.message)


@pytest.mark.parametrize("sent", [
    {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web", "namespace": "default"},
     "spec": {"replicas": 3}, "status": {"replicas": 2, "selector": "app=web"}},
    # what `kubectl drain` POSTs (as JSON, but a protobuf client sends the same object)
    {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "nginx", "namespace": "default"},
     "deleteOptions": {"gracePeriodSeconds": 0, "preconditions": {"uid": "u1"}, "dryRun": ["All"]}},
    {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Foreground"},
], ids=["scale", "eviction", "delete-options"])
def test_subresource_bodies_round_trip(sent: dict) -> None:
    assert wire.decode(wire.encode_dict(sent)) == sent


def test_type_meta_travels_only_in_the_envelope() -> None:
    # Kubernetes' objects have no fields 10001/10002: apiVersion and kind go in runtime.Unknown's TypeMeta.
    body = wire.encode_dict({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1"}, "data": {"a": "b"}})
    assert body.count(b"ConfigMap") == 1


def test_a_deployment_round_trips_through_kubernetes_protobuf() -> None:
    # kubectl create deployment web --image=nginx --replicas=2, as its JSON would be (the
    # recorded protobuf of this one lost its bytes >= 0x80 to the log's text encoding).
    sent = {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}},
                     "strategy": {}},
            "status": {}}
    body = wire.encode_dict(sent)
    assert body.startswith(b"k8s\x00")
    assert wire.decode(body) == sent
    deployment = manifest.from_dict(wire.decode(body))
    assert isinstance(deployment, apps_pb2.Deployment)
    assert deployment.spec.replicas == 2
    assert deployment.spec.template.spec.containers[0].image == "nginx"


def test_the_reshaped_fields_round_trip() -> None:
    """Quantities, IntOrStrings, embedded structs, bytes and times: every shape wire.py converts."""
    pod = manifest.from_dict({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "labels": {"a": "b"},
                     "creationTimestamp": "2024-05-01T10:00:00Z",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                          "uid": "u1", "controller": True}]},
        "spec": {"containers": [{
            "name": "c", "image": "nginx",
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
            "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}],
            "envFrom": [{"configMapRef": {"name": "cm2", "optional": True}}],
            "livenessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
            "readinessProbe": {"tcpSocket": {"port": 80}}}],
            "volumes": [{"name": "v", "configMap": {"name": "cm", "defaultMode": 420}},
                        {"name": "e", "emptyDir": {"sizeLimit": "1Gi"}}]},
    })
    again = manifest.from_dict(wire.decode(wire.encode(pod)))
    assert again == pod
    probe = again.spec.containers[0].liveness_probe  # type: ignore[attr-defined]
    assert probe.http_get.port == "http" and probe.period_seconds == 5

    secret = core_pb2.Secret(api_version="v1", kind="Secret", data={"k": b"\x00\xffbinary"})
    secret.metadata.name = "s"
    assert manifest.from_dict(wire.decode(wire.encode(secret))) == secret


def test_kubernetes_numbers_where_kubectl_puts_them() -> None:
    """Spot checks against k8s.io/api's generated.proto, independent of the recorded bodies."""
    numbers = {f.name: f.number for f in meta_pb2.ObjectMeta.DESCRIPTOR.fields}
    assert (numbers["name"], numbers["namespace"], numbers["uid"], numbers["resource_version"],
            numbers["labels"], numbers["annotations"]) == (1, 3, 5, 6, 11, 12)
    container = {f.name: f.number for f in core_pb2.Container.DESCRIPTOR.fields}
    assert (container["env_from"], container["startup_probe"], container["restart_policy"]) == (19, 22, 24)
    assert apps_pb2.DeploymentSpec.DESCRIPTOR.fields_by_name["progress_deadline_seconds"].number == 9
    assert rbac_pb2.RoleBinding.DESCRIPTOR.fields_by_name["role_ref"].number == 3
    attributes = {f.name: f.number for f in authorization_pb2.ResourceAttributes.DESCRIPTOR.fields}
    assert (attributes["namespace"], attributes["verb"], attributes["resource"], attributes["name"]) == (1, 2, 5, 7)
    status = {f.name: f.number for f in authorization_pb2.SubjectAccessReviewStatus.DESCRIPTOR.fields}
    assert (status["allowed"], status["reason"], status["evaluation_error"], status["denied"]) == (1, 2, 3, 4)
    assert authentication_pb2.TokenReviewStatus.DESCRIPTOR.fields_by_name["audiences"].number == 4
    assert meta_pb2.DeleteOptions.DESCRIPTOR.fields_by_name["propagation_policy"].number == 4


@pytest.mark.parametrize(("body", "problem"), [
    (b"{\"kind\": \"ConfigMap\"}", "must start with"),
    # a ConfigMap whose metadata says 5 bytes and brings 4
    (b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x06\x0a\x05\x0a\x03cm", "does not decode as ConfigMap"),
    (CONFIGMAP[:20], "not a valid runtime.Unknown"),
    (b"k8s\x00" + b"\xff" * 12, "not a valid runtime.Unknown"),
    (b"k8s\x00\x0a\x0e\x0a\x02v1\x12\x08Frobnitz\x12\x00", "Frobnitz in v1"),
    (b"k8s\x00\x12\x00", "apiVersion and kind"),
], ids=["json", "truncated-object", "truncated-envelope", "garbage", "unknown-kind", "no-typemeta"])
def test_a_bad_body_is_a_bad_request_naming_the_problem(body: bytes, problem: str) -> None:
    with pytest.raises(BadRequest, match=problem):
        wire.decode(body)


def test_every_api_message_has_a_wire_shape() -> None:
    assert "flotilla.api.PodSpec" in set(wire.wire_messages())


@pytest.mark.parametrize(("message", "field", "key", "strategy", "list_type", "map_keys"), [
    (core_pb2.PodSpec, "containers", "name", "merge", "map", ("name",)),
    (core_pb2.PodSpec, "volumes", "name", "merge,retainKeys", "map", ("name",)),
    (core_pb2.PodSpec, "tolerations", "", "", "atomic", ()),
    (core_pb2.Container, "ports", "containerPort", "merge", "map", ("containerPort", "protocol")),
    (core_pb2.Container, "env", "name", "merge", "map", ("name",)),
    (core_pb2.Container, "volumeMounts", "mountPath", "merge", "map", ("mountPath",)),
    (core_pb2.ServiceSpec, "ports", "port", "merge", "map", ("port", "protocol")),
    (meta_pb2.ObjectMeta, "ownerReferences", "uid", "merge", "map", ("uid",)),
    (meta_pb2.ObjectMeta, "finalizers", "", "merge", "set", ()),
    (core_pb2.PodStatus, "conditions", "type", "merge", "map", ("type",)),
    (apps_pb2.DeploymentStatus, "conditions", "type", "merge", "map", ("type",)),
    (core_pb2.NodeSpec, "taints", "", "", "atomic", ()),
])
def test_patch_metadata(message: type, field: str, key: str, strategy: str, list_type: str,
                        map_keys: tuple[str, ...]) -> None:
    meta = patchmeta.lookup(message, field)
    assert (meta.merge_key, meta.strategy, meta.list_type, meta.list_map_keys) == (key, strategy, list_type, map_keys)


def test_patch_metadata_for_openapi_and_walking_down() -> None:
    assert patchmeta.openapi_extensions(apps_pb2.DeploymentSpec, "strategy") == {
        "x-kubernetes-patch-strategy": "retainKeys"}
    assert patchmeta.element(core_pb2.PodSpec, "containers") is core_pb2.Container.DESCRIPTOR
    assert patchmeta.lookup(core_pb2.Container, "volume_mounts") == patchmeta.lookup(core_pb2.Container, "volumeMounts")
    assert not patchmeta.lookup(core_pb2.Container, "image").merges
    with pytest.raises(KeyError):
        patchmeta.lookup(core_pb2.Container, "nope")
