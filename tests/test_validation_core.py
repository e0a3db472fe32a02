"""What the apiserver accepts and what it fills in: defaulting and validation, no server.

Each story builds an object from a manifest as a user would write it, lets the
apiserver's defaulting run, and checks what validation says, down to the field
path and Kubernetes' wording, since that is what the user reads back.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.message import Message

from controlplane.apiserver.defaults import image_pull_policy
from controlplane.apiserver.strategies import apply_defaults, validate
from controlplane.apiserver.validation.meta import is_dns1123_label, is_port_name, is_qualified_name
from proto import apps_pb2, autoscaling_pb2, core_pb2
from proto.kinds import Kind, for_message
from proto.manifest import from_dict

# Verbatim from kubernetes.io (tests/manifests/README.md says where each comes from).
MANIFESTS = Path(__file__).parent / "manifests"
NGINX_DEPLOYMENT = yaml.safe_load((MANIFESTS / "nginx-deployment.yaml").read_text())
MY_SERVICE = yaml.safe_load((MANIFESTS / "my-service.yaml").read_text())
NGINX_POD = yaml.safe_load((MANIFESTS / "simple-pod.yaml").read_text())

DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")


# ---------------------------------------------------------------- helpers


def admit(manifest: dict[str, Any]) -> tuple[Kind, Message]:
    """The object as the apiserver would validate it: namespace from the request, then defaults."""
    obj = from_dict(copy.deepcopy(manifest))
    kind = for_message(obj)
    meta = getattr(obj, "metadata", None)
    assert meta is not None
    if kind.namespaced and not meta.namespace:
        meta.namespace = "default"
    apply_defaults(kind, obj)
    return kind, obj


def errors_of(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    kind, obj = admit(manifest)
    return validate(kind, obj, None)


def paths_of(manifest: dict[str, Any]) -> list[str]:
    return [path for path, _ in errors_of(manifest)]


def update_errors(old_manifest: dict[str, Any], new_manifest: dict[str, Any]) -> list[tuple[str, str]]:
    kind, old = admit(old_manifest)
    _, new = admit(new_manifest)
    return validate(kind, new, old)


def message_at(errors: list[tuple[str, str]], path: str) -> str:
    found = [msg for p, msg in errors if p == path]
    assert found, f"no error at {path}: {errors}"
    return found[0]


def pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(NGINX_POD)
    if containers:
        manifest["spec"]["containers"] = list(containers)
    manifest["spec"].update(spec)
    return manifest


def container(**fields: Any) -> dict[str, Any]:
    return {"name": "app", "image": "nginx:1.14.2", **fields}


def deployment(**spec: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(NGINX_DEPLOYMENT)
    manifest["spec"].update(spec)
    return manifest


def service(**spec: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(MY_SERVICE)
    manifest["spec"].update(spec)
    return manifest


def as_pod(obj: Message) -> core_pb2.Pod:
    assert isinstance(obj, core_pb2.Pod)
    return obj


# ---------------------------------------------------------------- the documentation's examples pass


def test_the_kubernetes_io_nginx_deployment_is_valid() -> None:
    assert errors_of(NGINX_DEPLOYMENT) == []


def test_the_kubernetes_io_my_service_is_valid() -> None:
    assert errors_of(MY_SERVICE) == []


def test_a_simple_nginx_pod_is_valid() -> None:
    assert errors_of(NGINX_POD) == []


# ---------------------------------------------------------------- defaults


def test_a_pod_is_stored_fully_spelled_out() -> None:
    _, obj = admit(NGINX_POD)
    spec = as_pod(obj).spec
    assert (spec.restart_policy, spec.termination_grace_period_seconds, spec.dns_policy) == (
        "Always", 30, "ClusterFirst")
    assert spec.scheduler_name == "default-scheduler"
    assert spec.HasField("enable_service_links") and spec.enable_service_links
    c = spec.containers[0]
    assert (c.termination_message_path, c.termination_message_policy) == ("/dev/termination-log", "File")
    assert c.image_pull_policy == "IfNotPresent"
    assert c.ports[0].protocol == "TCP"
    assert not spec.tolerations  # not-ready/unreachable tolerations are not defaulting's job


def test_what_the_user_wrote_is_kept() -> None:
    _, obj = admit(pod(container(imagePullPolicy="Never"), restartPolicy="OnFailure",
                       terminationGracePeriodSeconds=0))
    spec = as_pod(obj).spec
    assert spec.restart_policy == "OnFailure"
    assert spec.termination_grace_period_seconds == 0  # set to 0 is not "unset"
    assert spec.containers[0].image_pull_policy == "Never"


@pytest.mark.parametrize(("image", "policy"), [
    ("nginx", "Always"),
    ("nginx:latest", "Always"),
    ("nginx:1.25", "IfNotPresent"),
    ("localhost:5000/nginx", "Always"),  # the colon belongs to the registry's port
    ("localhost:5000/team/app:v1", "IfNotPresent"),
    ("nginx@sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c54a66cd53c9b31", "IfNotPresent"),
])
def test_image_pull_policy_follows_the_tag(image: str, policy: str) -> None:
    assert image_pull_policy(image) == policy
    _, obj = admit(pod(container(image=image)))
    assert as_pod(obj).spec.containers[0].image_pull_policy == policy


def test_probes_get_timings_and_http_defaults() -> None:
    _, obj = admit(pod(container(livenessProbe={"httpGet": {"port": 8080}},
                                 readinessProbe={"tcpSocket": {"port": "http"}, "periodSeconds": 5})))
    c = as_pod(obj).spec.containers[0]
    live = c.liveness_probe
    assert (live.timeout_seconds, live.period_seconds, live.success_threshold, live.failure_threshold) == (
        1, 10, 1, 3)
    assert (live.http_get.scheme, live.http_get.path) == ("HTTP", "/")
    assert c.readiness_probe.period_seconds == 5
    assert not c.HasField("startup_probe")


def test_a_limit_alone_is_also_the_request() -> None:
    _, obj = admit(pod(container(resources={"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}})))
    assert dict(as_pod(obj).spec.containers[0].resources.requests) == {"cpu": "500m", "memory": "64Mi"}


def test_service_defaults() -> None:
    _, obj = admit(service(ports=[{"port": 80}]))
    assert isinstance(obj, core_pb2.Service)
    spec = obj.spec
    assert (spec.type, spec.session_affinity) == ("ClusterIP", "None")
    assert spec.internal_traffic_policy == "Cluster"
    assert (spec.ports[0].protocol, spec.ports[0].target_port) == ("TCP", "80")
    assert spec.external_traffic_policy == ""  # only externally reachable services have one

    _, obj = admit(service(type="NodePort"))
    assert isinstance(obj, core_pb2.Service)
    assert obj.spec.external_traffic_policy == "Cluster"
    assert obj.spec.ports[0].target_port == "9376"


def test_deployment_defaults() -> None:
    manifest = deployment()
    del manifest["spec"]["replicas"]
    _, obj = admit(manifest)
    assert isinstance(obj, apps_pb2.Deployment)
    spec = obj.spec
    assert spec.replicas == 1
    assert spec.strategy.type == "RollingUpdate"
    rolling = spec.strategy.rolling_update
    assert (rolling.max_surge, rolling.max_unavailable) == ("25%", "25%")
    assert (spec.revision_history_limit, spec.progress_deadline_seconds) == (10, 600)
    assert spec.template.spec.restart_policy == "Always"
    assert spec.template.spec.containers[0].termination_message_path == "/dev/termination-log"


def test_deployment_scaled_to_zero_stays_at_zero() -> None:
    _, obj = admit(deployment(replicas=0))
    assert isinstance(obj, apps_pb2.Deployment)
    assert obj.spec.HasField("replicas") and obj.spec.replicas == 0


def test_recreate_deployment_gets_no_rolling_update() -> None:
    _, obj = admit(deployment(strategy={"type": "Recreate"}))
    assert isinstance(obj, apps_pb2.Deployment)
    assert not obj.spec.strategy.HasField("rolling_update")
    assert errors_of(deployment(strategy={"type": "Recreate"})) == []


def test_replica_set_defaults() -> None:
    manifest = copy.deepcopy(NGINX_DEPLOYMENT)
    manifest["kind"] = "ReplicaSet"
    del manifest["spec"]["replicas"]
    _, obj = admit(manifest)
    assert isinstance(obj, apps_pb2.ReplicaSet)
    assert obj.spec.replicas == 1
    assert obj.spec.template.spec.dns_policy == "ClusterFirst"


def test_namespace_defaults_and_a_terminating_namespace_is_not_refinalized() -> None:
    _, obj = admit({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    assert isinstance(obj, core_pb2.Namespace)
    assert (list(obj.spec.finalizers), obj.status.phase) == (["kubernetes"], "Active")

    _, obj = admit({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "team-a", "deletionTimestamp": "2024-01-01T00:00:00Z"},
                    "status": {"phase": "Terminating"}})
    assert isinstance(obj, core_pb2.Namespace)
    assert (list(obj.spec.finalizers), obj.status.phase) == ([], "Terminating")


def test_hpa_defaults_to_80_percent_cpu() -> None:
    _, obj = admit({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": "web"},
                    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                             "maxReplicas": 5}})
    assert isinstance(obj, autoscaling_pb2.HorizontalPodAutoscaler)
    assert obj.spec.min_replicas == 1
    [metric] = obj.spec.metrics
    assert (metric.type, metric.resource.name) == ("Resource", "cpu")
    assert (metric.resource.target.type, metric.resource.target.average_utilization) == ("Utilization", 80)
    assert validate(for_message(obj), obj, None) == []


def test_secret_is_opaque_and_string_data_is_folded_into_data() -> None:
    _, obj = admit({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                    "stringData": {"password": "hunter2"}})
    assert isinstance(obj, core_pb2.Secret)
    assert obj.type == "Opaque"
    assert dict(obj.data) == {"password": b"hunter2"}
    assert not obj.string_data


def test_defaulting_twice_changes_nothing() -> None:
    for manifest in (NGINX_POD, NGINX_DEPLOYMENT, MY_SERVICE):
        kind, obj = admit(manifest)
        again = copy.deepcopy(obj)
        apply_defaults(kind, again)
        assert again == obj


# ---------------------------------------------------------------- metadata


def test_names_follow_each_kinds_rule() -> None:
    bad = copy.deepcopy(NGINX_POD)
    bad["metadata"]["name"] = "Nginx"
    assert errors_of(bad) == [("metadata.name", f'Invalid value: "Nginx": {DNS1123_SUBDOMAIN_MSG}')]

    dotted = copy.deepcopy(NGINX_POD)
    dotted["metadata"]["name"] = "nginx.v1"
    assert errors_of(dotted) == []  # subdomains may have dots ...
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team.a"}}
    assert "a lowercase RFC 1123 label must consist" in message_at(errors_of(namespace), "metadata.name")

    numeric = copy.deepcopy(MY_SERVICE)
    # ... and a Service name is a DNS label, which starts with a letter
    numeric["metadata"]["name"] = "1-service"
    assert "a DNS-1035 label must consist" in message_at(errors_of(numeric), "metadata.name")

    long_label = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a" * 64}}
    assert message_at(errors_of(long_label), "metadata.name") == (
        f'Invalid value: "{"a" * 64}": must be no more than 63 characters')


def test_name_is_required() -> None:
    nameless = copy.deepcopy(NGINX_POD)
    del nameless["metadata"]["name"]
    assert errors_of(nameless) == [("metadata.name", "Required value: name or generateName is required")]


def test_namespace_is_required_for_namespaced_kinds_and_forbidden_otherwise() -> None:
    obj = from_dict(copy.deepcopy(NGINX_POD))
    kind = for_message(obj)
    apply_defaults(kind, obj)
    assert validate(kind, obj, None) == [("metadata.namespace", "Required value")]

    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "namespace": "default"}}
    kind, obj = admit(node)
    assert validate(kind, obj, None) == [("metadata.namespace", "Forbidden: not allowed on this type")]


def test_label_keys_and_values() -> None:
    manifest = copy.deepcopy(NGINX_POD)
    manifest["metadata"]["labels"] = {"example.com/tier": "web", "app": "", "bad key": "x", "ok": "-bad-"}
    errors = errors_of(manifest)
    assert [p for p, _ in errors] == ["metadata.labels", "metadata.labels"]
    assert errors[0][1].startswith(
        'Invalid value: "bad key": name part must consist of alphanumeric characters')
    assert errors[1][1].startswith('Invalid value: "-bad-": a valid label must be an empty string or consist')


def test_annotations_may_not_exceed_256_kib() -> None:
    manifest = copy.deepcopy(NGINX_POD)
    manifest["metadata"]["annotations"] = {"big": "x" * (256 * 1024)}
    assert errors_of(manifest) == [("metadata.annotations", "Too long: may not be more than 262144 bytes")]


def test_owner_references_need_identity_and_at_most_one_controller() -> None:
    manifest = copy.deepcopy(NGINX_POD)
    ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u1", "controller": True}
    manifest["metadata"]["ownerReferences"] = [ref, {**ref, "name": "web-2", "uid": ""}]
    errors = errors_of(manifest)
    assert errors[0] == ("metadata.ownerReferences[1].uid", 'Invalid value: "": must not be empty')
    assert errors[1][0] == "metadata.ownerReferences"
    assert "Only one reference can have Controller set to true" in errors[1][1]
    assert len(errors) == 2


def test_identity_fields_are_immutable() -> None:
    old = copy.deepcopy(NGINX_POD)
    old["metadata"].update(uid="a1", creationTimestamp="2024-01-01T00:00:00Z")
    new = copy.deepcopy(old)
    new["metadata"].update(name="other", uid="b2", creationTimestamp="2025-01-01T00:00:00Z")
    errors = update_errors(old, new)
    assert errors == [
        ("metadata.name", 'Invalid value: "other": field is immutable'),
        ("metadata.uid", 'Invalid value: "b2": field is immutable'),
        ("metadata.creationTimestamp", 'Invalid value: "2025-01-01T00:00:00Z": field is immutable'),
    ]


def test_labels_may_change_on_update() -> None:
    new = copy.deepcopy(NGINX_POD)
    new["metadata"]["labels"] = {"app": "nginx", "track": "canary"}
    assert update_errors(NGINX_POD, new) == []


# ---------------------------------------------------------------- pod spec: containers


def test_container_port_out_of_range() -> None:
    errors = errors_of(pod(container(ports=[{"containerPort": 70000, "hostPort": 70000}])))
    assert errors == [
        ("spec.containers[0].ports[0].containerPort",
         "Invalid value: 70000: must be between 1 and 65535, inclusive"),
        ("spec.containers[0].ports[0].hostPort",
         "Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ]


def test_container_port_protocol_and_names() -> None:
    errors = errors_of(pod(container(ports=[
        {"containerPort": 80, "protocol": "HTTP", "name": "web"},
        {"containerPort": 81, "name": "web"},
        {"containerPort": 82, "name": "metrics_port_too_long"},
        {"containerPort": 83, "name": "8080"},
    ])))
    assert errors == [
        ("spec.containers[0].ports[0].protocol",
         'Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"'),
        ("spec.containers[0].ports[1].name", 'Duplicate value: "web"'),
        ("spec.containers[0].ports[2].name",
         'Invalid value: "metrics_port_too_long": must be no more than 15 characters'),
        ("spec.containers[0].ports[2].name", 'Invalid value: "metrics_port_too_long": must contain only '
                                             "alpha-numeric characters (a-z, 0-9), and hyphens (-)"),
        ("spec.containers[0].ports[3].name", 'Invalid value: "8080": must contain at least one letter (a-z)'),
    ]


def test_a_pod_needs_a_container_and_unique_container_names() -> None:
    assert errors_of(pod(containers=[])) == [("spec.containers", "Required value")]
    errors = errors_of(pod(container(), initContainers=[container(command=["true"])]))
    assert errors == [("spec.initContainers[0].name", 'Duplicate value: "app"')]


def test_container_name_and_image() -> None:
    errors = errors_of(pod(container(name="App"), container(name="sidecar", image=" busybox"),
                           container(name="empty", image="")))
    assert [p for p, _ in errors] == ["spec.containers[0].name", "spec.containers[1].image",
                                      "spec.containers[2].image"]
    assert errors[1][1] == 'Invalid value: " busybox": must not have leading or trailing whitespace'
    assert errors[2][1] == "Required value"


def test_enumerations_use_kubernetes_wording() -> None:
    errors = errors_of(pod(container(imagePullPolicy="Foo"), restartPolicy="Sometimes", dnsPolicy="Google"))
    assert errors == [
        ("spec.containers[0].imagePullPolicy",
         'Unsupported value: "Foo": supported values: "Always", "IfNotPresent", "Never"'),
        ("spec.restartPolicy",
         'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"'),
        ("spec.dnsPolicy", 'Unsupported value: "Google": supported values: "ClusterFirst", '
                           '"ClusterFirstWithHostNet", "Default", "None"'),
    ]


def test_requests_may_not_exceed_limits() -> None:
    errors = errors_of(pod(container(resources={"requests": {"cpu": "1", "memory": "64Mi"},
                                                "limits": {"cpu": "500m", "memory": "128Mi"}})))
    assert errors == [("spec.containers[0].resources.requests",
                       'Invalid value: "1": must be less than or equal to cpu limit of 500m')]


def test_resource_names_and_values() -> None:
    errors = errors_of(pod(container(resources={
        "limits": {"gpu": "1", "example.com/foo": "1", "hugepages-2Mi": "4Mi"},
        "requests": {"memory": "-1", "example.com/foo": "1", "hugepages-2Mi": "4Mi"}})))
    assert errors == [
        ("spec.containers[0].resources.limits[gpu]",
         'Invalid value: "gpu": must be a standard resource for containers'),
        # defaulting copied the limit into requests, so the name is wrong there too
        ("spec.containers[0].resources.requests[gpu]",
         'Invalid value: "gpu": must be a standard resource for containers'),
        ("spec.containers[0].resources.requests[memory]",
         'Invalid value: "-1": must be greater than or equal to 0'),
    ]


def test_extended_resources_are_whole_and_not_overcommitted() -> None:
    errors = errors_of(pod(container(resources={"limits": {"example.com/gpu": "2"},
                                                "requests": {"example.com/gpu": "1"}})))
    assert errors == [("spec.containers[0].resources.requests",
                       'Invalid value: "1": must be equal to example.com/gpu limit of 2')]
    errors = errors_of(pod(container(resources={"limits": {"example.com/gpu": "500m"}})))
    assert ("spec.containers[0].resources.limits[example.com/gpu]",
            'Invalid value: "500m": must be an integer') in errors


def test_env_var_names() -> None:
    errors = errors_of(pod(container(env=[{"name": "GOOD_NAME", "value": "x"}, {"name": "1BAD"},
                                          {"value": "y"}])))
    assert errors == [
        ("spec.containers[0].env[1].name",
         "Invalid value: \"1BAD\": a valid environment variable name must consist of alphabetic "
         "characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or "
         "'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"),
        ("spec.containers[0].env[2].name", "Required value"),
    ]


def test_env_value_from_needs_exactly_one_source() -> None:
    errors = errors_of(pod(container(env=[
        {"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "creds"}}},
    ])))
    assert errors == [
        ("spec.containers[0].env[0].valueFrom",
         'Invalid value: "": may not be specified when `value` is not empty'),
        ("spec.containers[0].env[1].valueFrom.secretKeyRef.key", "Required value"),
    ]


# ---------------------------------------------------------------- pod spec: volumes


def test_volume_mounts_need_a_declared_volume_and_an_absolute_path() -> None:
    errors = errors_of(pod(container(volumeMounts=[{"name": "data", "mountPath": "/data"},
                                                   {"name": "cache", "mountPath": "cache"},
                                                   {"name": "cache"}]),
                           volumes=[{"name": "cache", "emptyDir": {}}]))
    assert errors == [
        ("spec.containers[0].volumeMounts[0].name", 'Not found: "data"'),
        ("spec.containers[0].volumeMounts[1].mountPath", 'Invalid value: "cache": must be an absolute path'),
        ("spec.containers[0].volumeMounts[2].mountPath", "Required value"),
    ]


def test_volumes_have_unique_names_and_exactly_one_source() -> None:
    bad_name = 'Invalid value: "Bad_Name": ' + is_dns1123_label("Bad_Name")[0]
    errors = errors_of(pod(volumes=[
        {"name": "a", "emptyDir": {}, "hostPath": {"path": "/tmp"}},
        {"name": "a", "hostPath": {"path": "var/log"}},
        {"name": "Bad_Name", "configMap": {}},
    ]))
    assert errors == [
        ("spec.volumes[0].hostPath", "Forbidden: may not specify more than 1 volume type"),
        ("spec.volumes[1].name", 'Duplicate value: "a"'),
        ("spec.volumes[1].hostPath.path", 'Invalid value: "var/log": must be an absolute path'),
        ("spec.volumes[2].name", bad_name),
        ("spec.volumes[2].configMap.name", "Required value"),
    ]


def test_a_volume_without_a_source_is_an_empty_dir_after_defaults() -> None:
    _, obj = admit(pod(volumes=[{"name": "scratch"}]))
    assert as_pod(obj).spec.volumes[0].HasField("empty_dir")
    # Without defaulting, validation names the missing source.
    obj = from_dict(pod(volumes=[{"name": "scratch"}]))
    assert ("spec.volumes[0]", "Required value: must specify a volume type") in validate(
        for_message(obj), obj, None)


# ---------------------------------------------------------------- pod spec: probes


def test_probes_need_exactly_one_valid_handler() -> None:
    errors = errors_of(pod(container(
        livenessProbe={"initialDelaySeconds": 5},
        readinessProbe={"httpGet": {"port": 8080}, "tcpSocket": {"port": 8080}},
        startupProbe={"httpGet": {"port": 0}, "periodSeconds": -1, "successThreshold": 2},
    )))
    assert errors == [
        ("spec.containers[0].livenessProbe", "Required value: must specify a handler type"),
        ("spec.containers[0].readinessProbe.tcpSocket",
         "Forbidden: may not specify more than 1 handler type"),
        ("spec.containers[0].startupProbe.httpGet.port",
         "Invalid value: 0: must be between 1 and 65535, inclusive"),
        ("spec.containers[0].startupProbe.periodSeconds",
         "Invalid value: -1: must be greater than or equal to 1"),
        ("spec.containers[0].startupProbe.successThreshold", "Invalid value: 2: must be 1"),
    ]


def test_probe_ports_may_be_names() -> None:
    assert errors_of(pod(container(ports=[{"name": "http", "containerPort": 8080}],
                                   readinessProbe={"httpGet": {"port": "http"}}))) == []
    errors = errors_of(pod(container(readinessProbe={"tcpSocket": {"port": "-http-"}})))
    assert errors == [("spec.containers[0].readinessProbe.tcpSocket.port",
                       'Invalid value: "-http-": must not begin or end with a hyphen')]


# ---------------------------------------------------------------- pod spec: scheduling


def test_tolerations() -> None:
    errors = errors_of(pod(tolerations=[
        {"key": "dedicated", "operator": "Exists", "value": "gpu"},
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule",
         "tolerationSeconds": 30},
        {"key": "dedicated", "operator": "Is", "effect": "Sometimes"},
        {"operator": "Equal", "value": "x"},
        {"operator": "Exists"},  # tolerate everything: valid
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300},
    ]))
    assert [p for p, _ in errors] == ["spec.tolerations[0].operator", "spec.tolerations[1].effect",
                                      "spec.tolerations[2].operator", "spec.tolerations[2].effect",
                                      "spec.tolerations[3].operator"]
    assert errors[0][1].endswith("value must be empty when `operator` is 'Exists'")
    assert errors[1][1] == ('Invalid value: "NoSchedule": effect must be \'NoExecute\' when '
                            "`tolerationSeconds` is set")
    assert errors[2][1] == 'Unsupported value: "Is": supported values: "Equal", "Exists"'
    assert errors[3][1] == ('Unsupported value: "Sometimes": supported values: "NoSchedule", '
                            '"PreferNoSchedule", "NoExecute"')


def test_node_selector_keys_are_qualified_names() -> None:
    errors = errors_of(pod(nodeSelector={"disktype": "ssd", "kubernetes.io/os": "linux", "bad/key/x": "y"}))
    assert [p for p, _ in errors] == ["spec.nodeSelector"]
    assert "a qualified name must consist of alphanumeric characters" in errors[0][1]


def test_node_affinity_operators_and_values() -> None:
    required_terms = {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "zone", "operator": "In"},
        {"key": "gpu", "operator": "Exists", "values": ["yes"]},
        {"key": "cores", "operator": "Gt", "values": ["4", "8"]},
        {"key": "memory", "operator": "Lt", "values": ["lots"]},
        {"key": "arch", "operator": "Like", "values": ["arm"]},
    ]}]}
    preferred = [{"weight": 0, "preference": {"matchExpressions": [{"key": "zone", "operator": "In",
                                                                      "values": ["a"]}]}}]
    errors = errors_of(pod(affinity={"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": required_terms,
        "preferredDuringSchedulingIgnoredDuringExecution": preferred}}))
    base = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
    assert errors == [
        (f"{base}.matchExpressions[0].values",
         "Required value: must be specified when `operator` is 'In' or 'NotIn'"),
        (f"{base}.matchExpressions[1].values",
         "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"),
        (f"{base}.matchExpressions[2].values",
         "Required value: must be specified single value when `operator` is 'Lt' or 'Gt'"),
        (f"{base}.matchExpressions[3].values[0]", 'Invalid value: "lots": must be an integer'),
        (f"{base}.matchExpressions[4].operator", 'Invalid value: "Like": not a valid selector operator'),
        ("spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
         "Invalid value: 0: must be in the range 1-100"),
    ]


def test_topology_spread_constraints() -> None:
    errors = errors_of(pod(topologySpreadConstraints=[
        {"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
        {"maxSkew": 1, "whenUnsatisfiable": "Eventually"},
    ]))
    assert errors == [
        ("spec.topologySpreadConstraints[0].maxSkew", "Invalid value: 0: must be greater than zero"),
        ("spec.topologySpreadConstraints[1].topologyKey", "Required value: can not be empty"),
        ("spec.topologySpreadConstraints[1].whenUnsatisfiable",
         'Unsupported value: "Eventually": supported values: "DoNotSchedule", "ScheduleAnyway"'),
    ]


def test_termination_grace_period_may_not_be_negative() -> None:
    assert errors_of(pod(terminationGracePeriodSeconds=-1)) == [
        ("spec.terminationGracePeriodSeconds", "Invalid value: -1: must be greater than or equal to 0")]


# ---------------------------------------------------------------- pod updates


def stored_pod(**spec: Any) -> dict[str, Any]:
    manifest = pod(**spec)
    manifest["metadata"].update(uid="u1", creationTimestamp="2024-01-01T00:00:00Z")
    return manifest


def test_a_running_pod_may_change_its_image_and_grace_period() -> None:
    old = stored_pod(nodeName="node-1")
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "nginx:1.25"
    new["spec"]["terminationGracePeriodSeconds"] = 5
    assert update_errors(old, new) == []


def test_a_running_pod_may_not_change_anything_else() -> None:
    old = stored_pod()
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["command"] = ["sleep", "infinity"]
    [(path, message)] = update_errors(old, new)
    assert path == "spec"
    assert message.startswith("Forbidden: pod updates may not change fields other than "
                              "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                              "`spec.activeDeadlineSeconds`,")


def test_tolerations_may_only_be_added() -> None:
    toleration = {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
    old = stored_pod(tolerations=[toleration])
    added = copy.deepcopy(old)
    added["spec"]["tolerations"].append({"key": "spot", "operator": "Exists"})
    assert update_errors(old, added) == []
    removed = copy.deepcopy(old)
    removed["spec"]["tolerations"] = []
    assert update_errors(old, removed) == [
        ("spec.tolerations",
         "Forbidden: existing toleration can not be modified except its tolerationSeconds")]


def test_node_name_is_set_by_binding_and_then_fixed() -> None:
    bound = stored_pod(nodeName="node-1")
    moved = copy.deepcopy(bound)
    moved["spec"]["nodeName"] = "node-2"
    assert update_errors(bound, moved) == [("spec.nodeName", 'Invalid value: "node-2": field is immutable')]
    # Binding a pending pod is pods/binding's job; a plain update may not do it.
    pending = stored_pod()
    assigned = copy.deepcopy(pending)
    assigned["spec"]["nodeName"] = "node-1"
    assert [p for p, _ in update_errors(pending, assigned)] == ["spec"]


def test_active_deadline_may_only_shrink() -> None:
    old = stored_pod(activeDeadlineSeconds=60)
    longer = copy.deepcopy(old)
    longer["spec"]["activeDeadlineSeconds"] = 120
    assert update_errors(old, longer) == [
        ("spec.activeDeadlineSeconds", "Invalid value: 120: must be less than or equal to previous value")]
    shorter = copy.deepcopy(old)
    shorter["spec"]["activeDeadlineSeconds"] = 30
    assert update_errors(old, shorter) == []


# ---------------------------------------------------------------- Node


def node(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1.example.com"}, "spec": spec,
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}


def test_a_node_with_a_pod_cidr_and_taints_is_valid() -> None:
    assert errors_of(node(podCIDR="10.244.1.0/24", taints=[
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])) == []


def test_node_pod_cidr_and_taints() -> None:
    errors = errors_of(node(podCIDR="10.244.1.0/33", taints=[
        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
        {"key": "dedicated", "value": "cpu", "effect": "NoSchedule"},
        {"key": "spot"},
    ]))
    assert errors == [
        ("spec.podCIDR", 'Invalid value: "10.244.1.0/33": must be a valid CIDR value, (e.g. 10.9.8.0/24 or '
                         '2001:db8::/64)'),
        ("spec.taints[1]",
         'Duplicate value: "dedicated=cpu:NoSchedule": taints must be unique by key and effect pair'),
        ("spec.taints[2].effect", "Required value"),
    ]


def test_node_capacity_must_be_non_negative_quantities() -> None:
    manifest = node()
    manifest["status"]["capacity"]["cpu"] = "-2"
    assert errors_of(manifest) == [
        ("status.capacity[cpu]", 'Invalid value: "-2": must be greater than or equal to 0')]


def test_node_pod_cidr_may_only_be_set_once() -> None:
    unset, old, new = node(), node(podCIDR="10.244.1.0/24"), node(podCIDR="10.244.2.0/24")
    for m in (unset, old, new):
        m["metadata"]["uid"] = "n1"
    assert update_errors(unset, new) == []
    assert update_errors(old, new) == [
        ("spec.podCIDR", 'Forbidden: node updates may not change podCIDR except from "" to valid')]


# ---------------------------------------------------------------- Service, Endpoints


def test_service_type_and_ports() -> None:
    errors = errors_of(service(type="Internal"))
    assert errors == [("spec.type", 'Unsupported value: "Internal": supported values: "ClusterIP", '
                                    '"ExternalName", "LoadBalancer", "NodePort"')]
    assert errors_of(service(ports=[])) == [("spec.ports", "Required value")]
    assert errors_of(service(ports=[], clusterIP="None")) == []  # a headless service may have no ports
    assert errors_of(service(type="ExternalName", ports=[], externalName="db.example.com")) == []


def test_service_port_numbers_and_target_ports() -> None:
    errors = errors_of(service(ports=[{"name": "web", "port": 0, "targetPort": "http_alt"},
                                      {"name": "dns", "port": 53, "protocol": "ICMP", "targetPort": 70000}]))
    assert errors == [
        ("spec.ports[0].port", "Invalid value: 0: must be between 1 and 65535, inclusive"),
        ("spec.ports[0].targetPort", 'Invalid value: "http_alt": must contain only alpha-numeric characters '
                                     "(a-z, 0-9), and hyphens (-)"),
        ("spec.ports[1].protocol", 'Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"'),
        ("spec.ports[1].targetPort", "Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ]


def test_several_service_ports_need_unique_names() -> None:
    errors = errors_of(service(ports=[{"port": 80}, {"name": "https", "port": 443},
                                      {"name": "https", "port": 8443}]))
    assert errors == [("spec.ports[0].name", "Required value"),
                      ("spec.ports[2].name", 'Duplicate value: "https"')]


def test_node_ports() -> None:
    errors = errors_of(service(ports=[{"port": 80, "nodePort": 30080}]))
    assert errors == [("spec.ports[0].nodePort", "Forbidden: may not be used when `type` is 'ClusterIP'")]
    errors = errors_of(service(type="NodePort", ports=[{"port": 80, "nodePort": 8080}]))
    assert errors == [("spec.ports[0].nodePort", "Invalid value: 8080: provided port is not in the valid "
                                                 "range. The range of valid ports is 30000-32767")]
    assert errors_of(service(type="NodePort", ports=[{"port": 80, "nodePort": 30080}])) == []


def test_session_affinity_cluster_ip_and_selector() -> None:
    errors = errors_of(service(sessionAffinity="Sticky", clusterIP="10.96.0.300",
                               selector={"app.kubernetes.io/name": "My App"}))
    assert [p for p, _ in errors] == ["spec.clusterIP", "spec.selector", "spec.sessionAffinity"]
    assert errors[0][1] == 'Invalid value: "10.96.0.300": must be a valid IPv4 address'
    assert errors[2][1] == 'Unsupported value: "Sticky": supported values: "ClientIP", "None"'
    assert errors_of(service(clusterIP="10.96.0.10")) == []


def test_cluster_ip_is_immutable_unless_the_service_becomes_external_name() -> None:
    old = service(clusterIP="10.96.0.10")
    old["metadata"]["uid"] = "s1"
    moved = copy.deepcopy(old)
    moved["spec"]["clusterIP"] = "10.96.0.11"
    assert update_errors(old, moved) == [
        ("spec.clusterIP", 'Invalid value: "10.96.0.11": field is immutable')]
    external = copy.deepcopy(old)
    external["spec"].update(type="ExternalName", clusterIP="", externalName="db.example.com")
    assert update_errors(old, external) == []


def test_endpoints() -> None:
    manifest = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "my-service"}, "subsets": [
        {"addresses": [{"ip": "10.244.1.5"}, {"ip": "10.244.1.256"}],
         "ports": [{"port": 9376}, {"port": 0}]}]}
    errors = errors_of(manifest)
    assert errors == [
        ("subsets[0].addresses[1].ip", 'Invalid value: "10.244.1.256": must be a valid IPv4 address'),
        ("subsets[0].ports[0].name", "Required value"),
        ("subsets[0].ports[1].name", "Required value"),
        ("subsets[0].ports[1].port", "Invalid value: 0: must be between 1 and 65535, inclusive"),
    ]


# ---------------------------------------------------------------- ReplicaSet, Deployment


def test_template_labels_must_match_the_selector() -> None:
    manifest = deployment()
    manifest["spec"]["template"]["metadata"]["labels"] = {"app": "web"}
    assert errors_of(manifest) == [
        ("spec.template.metadata.labels",
         'Invalid value: {"app":"web"}: `selector` does not match template `labels`')]


def test_selector_is_required_and_not_empty() -> None:
    missing = deployment()
    del missing["spec"]["selector"]
    assert errors_of(missing) == [("spec.selector", "Required value")]
    empty = deployment(selector={})
    assert errors_of(empty) == [
        ("spec.selector", "Invalid value: {}: empty selector is invalid for deployment")]
    bad = deployment(selector={"matchExpressions": [{"key": "app", "operator": "Equals",
                                                     "values": ["nginx"]}]})
    assert paths_of(bad) == ["spec.selector.matchExpressions[0].operator"]


def test_a_template_is_a_pod_spec_that_always_restarts() -> None:
    manifest = deployment()
    template = manifest["spec"]["template"]["spec"]
    template["restartPolicy"] = "OnFailure"
    template["containers"][0]["ports"][0]["containerPort"] = 70000
    assert errors_of(manifest) == [
        ("spec.template.spec.containers[0].ports[0].containerPort",
         "Invalid value: 70000: must be between 1 and 65535, inclusive"),
        ("spec.template.spec.restartPolicy", 'Unsupported value: "OnFailure": supported values: "Always"'),
    ]


def test_replicas_and_history_may_not_be_negative() -> None:
    errors = errors_of(deployment(replicas=-1, revisionHistoryLimit=-1))
    assert errors == [("spec.replicas", "Invalid value: -1: must be greater than or equal to 0"),
                      ("spec.revisionHistoryLimit", "Invalid value: -1: must be greater than or equal to 0")]


def test_deployment_strategy() -> None:
    assert errors_of(deployment(strategy={"type": "BlueGreen"})) == [
        ("spec.strategy.type",
         'Unsupported value: "BlueGreen": supported values: "Recreate", "RollingUpdate"')]
    assert errors_of(deployment(strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})) == [
        ("spec.strategy.rollingUpdate", "Forbidden: may not be specified when strategy `type` is 'Recreate'")]


def test_rolling_update_bounds() -> None:
    errors = errors_of(deployment(strategy={"rollingUpdate": {"maxSurge": "lots", "maxUnavailable": "150%"}}))
    assert errors == [
        ("spec.strategy.rollingUpdate.maxUnavailable",
         'Invalid value: "150%": must not be greater than 100%'),
        ("spec.strategy.rollingUpdate.maxSurge",
         "Invalid value: \"lots\": a valid percent string must be a numeric string followed by an ending '%' "
         "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"),
    ]
    errors = errors_of(deployment(strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}))
    assert errors == [("spec.strategy.rollingUpdate.maxUnavailable",
                       'Invalid value: "0%": may not be 0 when `maxSurge` is 0')]
    assert errors_of(deployment(strategy={"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})) == []


def test_progress_deadline_must_exceed_min_ready_seconds() -> None:
    assert errors_of(deployment(minReadySeconds=600, progressDeadlineSeconds=600)) == [
        ("spec.progressDeadlineSeconds", "Invalid value: 600: must be greater than minReadySeconds")]


def test_selector_is_immutable() -> None:
    old = deployment()
    old["metadata"]["uid"] = "d1"
    new = copy.deepcopy(old)
    new["spec"]["selector"]["matchLabels"]["tier"] = "web"
    new["spec"]["template"]["metadata"]["labels"]["tier"] = "web"
    assert update_errors(old, new) == [
        ("spec.selector", 'Invalid value: {"matchLabels":{"app":"nginx","tier":"web"}}: field is immutable')]
    scaled = copy.deepcopy(old)
    scaled["spec"]["replicas"] = 10
    assert update_errors(old, scaled) == []


def test_replica_set_gets_the_same_rules() -> None:
    manifest = copy.deepcopy(NGINX_DEPLOYMENT)
    manifest["kind"] = "ReplicaSet"
    assert errors_of(manifest) == []
    manifest["spec"]["template"]["metadata"]["labels"] = {}
    assert paths_of(manifest) == ["spec.template.metadata.labels"]


# ---------------------------------------------------------------- the small kinds


def test_lease_duration_must_be_positive() -> None:
    lease: dict[str, Any] = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                             "metadata": {"name": "node-1"},
                             "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 0}}
    assert errors_of(lease) == [("spec.leaseDurationSeconds", "Invalid value: 0: must be greater than 0")]
    lease["spec"]["leaseDurationSeconds"] = 40
    assert errors_of(lease) == []


def test_event_needs_what_it_is_about() -> None:
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "nginx.17a"}, "reason": "Scheduled"}
    assert errors_of(event) == [("involvedObject", "Required value")]
    event["involvedObject"] = {"kind": "Pod", "name": "nginx", "namespace": "other"}
    assert errors_of(event) == [
        ("involvedObject.namespace", 'Invalid value: "other": does not match event.namespace')]
    event["involvedObject"] = {"kind": "Node", "name": "node-1"}  # cluster-scoped: recorded in "default"
    assert errors_of(event) == []


def hpa(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                            "minReplicas": 2, "maxReplicas": 10}
    base.update(spec)
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": base}


def test_hpa_bounds_and_target() -> None:
    assert errors_of(hpa(scaleTargetRef={}, minReplicas=0, maxReplicas=0)) == [
        ("spec.scaleTargetRef.kind", "Required value"),
        ("spec.scaleTargetRef.name", "Required value"),
        ("spec.minReplicas", "Invalid value: 0: must be greater than or equal to 1"),
        ("spec.maxReplicas", "Invalid value: 0: must be greater than 0"),
    ]
    assert errors_of(hpa(minReplicas=5, maxReplicas=3)) == [
        ("spec.maxReplicas", "Invalid value: 3: must be greater than or equal to `minReplicas`")]


def test_hpa_metrics() -> None:
    errors = errors_of(hpa(metrics=[
        {"type": "Resource", "resource": {"name": "cpu",
                                          "target": {"type": "Utilization", "averageUtilization": 0}}},
        {"type": "Resource", "resource": {"target": {"type": "AverageValue", "averageValue": "500m"}}},
        {"type": "Magic"},
        {"type": "Resource", "resource": {"name": "memory",
                                          "target": {"type": "AverageValue", "averageValue": "1Gi"}}},
    ]))
    assert errors == [
        ("spec.metrics[0].resource.target.averageUtilization", "Invalid value: 0: must be greater than 0"),
        ("spec.metrics[1].resource.name", "Required value: must specify a resource name"),
        ("spec.metrics[2].type", 'Unsupported value: "Magic": supported values: "ContainerResource", '
                                 '"External", "Object", "Pods", "Resource"'),
    ]


def test_config_map_keys_and_size() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
          "data": {"app.properties": "a=b", "bad key": "x", "..": "y"}}
    errors = errors_of(cm)
    assert [p for p, _ in errors] == ["data[..]", "data[bad key]"]
    assert errors[0][1] == 'Invalid value: "..": must not be \'..\''
    assert errors[1][1].startswith(
        "Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' "
        "or '.'")
    big = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
           "data": {"blob": "x" * (1 << 20 | 1)}}
    assert errors_of(big) == [("", "Too long: may not be more than 1048576 bytes")]


def test_secret_keys_and_types() -> None:
    tls = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
           "stringData": {"tls.crt": "cert"}}
    assert errors_of(tls) == [("data[tls.key]", "Required value")]
    bad = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
           "stringData": {"pass word": "x"}}
    assert paths_of(bad) == ["data[pass word]"]


# ---------------------------------------------------------------- format checks


@pytest.mark.parametrize(("key", "ok"), [
    ("app", True), ("app.kubernetes.io/name", True), ("example.com/My_Key.1", True),
    ("/name", False), ("Example.com/name", False), ("a/b/c", False), ("-app", False), ("a" * 64, False),
])
def test_qualified_names(key: str, ok: bool) -> None:
    assert (is_qualified_name(key) == []) is ok


@pytest.mark.parametrize(("name", "ok"), [
    ("http", True), ("http-alt", True), ("h2c", True), ("web--ui", False), ("8080", False), ("HTTP", False),
    ("a-very-long-port-name", False),
])
def test_iana_service_names(name: str, ok: bool) -> None:
    assert (is_port_name(name) == []) is ok
