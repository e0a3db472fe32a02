"""What the apiserver fills in: the documentation's examples pass, and every default, no server."""

from __future__ import annotations

import copy

import pytest

from controlplane.apiserver.defaults import image_pull_policy
from controlplane.apiserver.strategies import apply_defaults, validate
from proto import apps_pb2, autoscaling_pb2, core_pb2
from proto.kinds import for_message
from tests.test_validation_support import (
    MY_SERVICE,
    NGINX_DEPLOYMENT,
    NGINX_POD,
    admit,
    as_pod,
    container,
    deployment,
    errors_of,
    pod,
    service,
)

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
    assert (spec.ip_family_policy, list(spec.ip_families)) == ("SingleStack", ["IPv4"])  # describe svc shows them

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
