"""Table columns per kind: the one definition kctl's tables and the apiserver's HTTP Tables share.

Given an object of each kind, its convertor's columns are kubectl's (names,
priorities, the `name` format) and its cells line up with them; a cell is
computed as kubectl computes it (a pod's STATUS from its container states, a
node's from its Ready condition); and the generated Table has the
meta.k8s.io/v1 JSON shape an HTTP client parses.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from controlplane.printers import (
    DEFAULT,
    TABLE_CONVERTORS,
    GenerateOptions,
    TableColumnDefinition,
    TableConvertor,
    apps,
    autoscaling,
    convertor_for,
    core,
    generate_table,
    text,
)
from proto import apps_pb2, autoscaling_pb2, core_pb2, kinds, manifest

AT = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC)

# kubectl's columns per kind (Kubernetes' pkg/printers/internalversion), -o wide ones marked with *.
KUBECTL_COLUMNS: dict[str, list[str]] = {
    "Pod": ["Name", "Ready", "Status", "Restarts", "Age", "*IP", "*Node", "*Nominated Node", "*Readiness Gates"],
    "Node": ["Name", "Status", "Roles", "Age", "Version", "*Internal-IP", "*External-IP", "*OS-Image",
             "*Kernel-Version", "*Container-Runtime"],
    "Service": ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "*Selector"],
    "Endpoints": ["Name", "Endpoints", "Age"],
    "Event": ["Last Seen", "Type", "Reason", "Object", "*Subobject", "*Source", "Message", "*First Seen", "*Count",
              "*Name"],
    "Namespace": ["Name", "Status", "Age"],
    "ConfigMap": ["Name", "Data", "Age"],
    "Secret": ["Name", "Type", "Data", "Age"],
    "ServiceAccount": ["Name", "Secrets", "Age"],
    "Deployment": ["Name", "Ready", "Up-to-date", "Available", "Age", "*Containers", "*Images", "*Selector"],
    "ReplicaSet": ["Name", "Desired", "Current", "Ready", "Age", "*Containers", "*Images", "*Selector"],
    "DaemonSet": ["Name", "Desired", "Current", "Ready", "Up-to-date", "Available", "Node Selector", "Age",
                  "*Containers", "*Images", "*Selector"],
    "StatefulSet": ["Name", "Ready", "Age", "*Containers", "*Images"],
    "ControllerRevision": ["Name", "Controller", "Revision", "Age"],
    "Job": ["Name", "Status", "Completions", "Duration", "Age", "*Containers", "*Images", "*Selector"],
    "CronJob": ["Name", "Schedule", "Timezone", "Suspend", "Active", "Last Schedule", "Age", "*Containers", "*Images",
                "*Selector"],
    "Lease": ["Name", "Holder", "Age"],
    "MutatingWebhookConfiguration": ["Name", "Webhooks", "Age"],
    "ValidatingWebhookConfiguration": ["Name", "Webhooks", "Age"],
    "CertificateSigningRequest": ["Name", "Age", "SignerName", "Requestor", "RequestedDuration", "Condition"],
    "HorizontalPodAutoscaler": ["Name", "Reference", "Targets", "MinPods", "MaxPods", "Replicas", "Age"],
    "ResourceQuota": ["Name", "Age", "Request", "Limit"],
    "LimitRange": ["Name", "Created At"],
    "PersistentVolume": ["Name", "Capacity", "Access Modes", "Reclaim Policy", "Status", "Claim", "StorageClass",
                         "VolumeAttributesClass", "Reason", "Age", "*VolumeMode"],
    "PersistentVolumeClaim": ["Name", "Status", "Volume", "Capacity", "Access Modes", "StorageClass",
                              "VolumeAttributesClass", "Age", "*VolumeMode"],
    "PodDisruptionBudget": ["Name", "Min Available", "Max Unavailable", "Allowed Disruptions", "Age"],
    "EndpointSlice": ["Name", "AddressType", "Ports", "Endpoints", "Age"],
    "NetworkPolicy": ["Name", "Pod-Selector", "Age"],
    "Ingress": ["Name", "Class", "Hosts", "Address", "Ports", "Age"],
    "IngressClass": ["Name", "Controller", "Parameters", "Age"],
    "CustomResourceDefinition": ["Name", "Created At"],
    "StorageClass": ["Name", "Provisioner", "ReclaimPolicy", "VolumeBindingMode", "AllowVolumeExpansion", "Age"],
    "Role": ["Name", "Created At"],
    "ClusterRole": ["Name", "Created At"],
    "RoleBinding": ["Name", "Role", "Age", "*Users", "*Groups", "*ServiceAccounts"],
    "ClusterRoleBinding": ["Name", "Role", "Age", "*Users", "*Groups", "*ServiceAccounts"],
}


def _column_names(convertor: TableConvertor[Any]) -> list[str]:
    return [("*" if c.priority else "") + c.name for c in convertor.columns]


@pytest.mark.parametrize("kind", sorted(KUBECTL_COLUMNS))
def test_columns_are_kubectls(kind: str) -> None:
    assert _column_names(TABLE_CONVERTORS[kind]) == KUBECTL_COLUMNS[kind]


def test_every_printed_kind_is_checked_and_the_rest_get_name_and_age() -> None:
    assert set(TABLE_CONVERTORS) == set(KUBECTL_COLUMNS)
    assert convertor_for(kinds.resolve("podmetrics")) is DEFAULT
    assert _column_names(DEFAULT) == ["Name", "Age"]


@pytest.mark.parametrize("kind", kinds.KINDS, ids=lambda k: k.kind)
def test_every_kind_has_one_cell_per_column(kind: kinds.Kind) -> None:
    # An empty object is the hardest case: every cell must still be computed, and in step.
    obj = kind.message()
    obj.metadata.name = "x"  # type: ignore[attr-defined]
    convertor = convertor_for(kind)
    cells = convertor.row(obj, GenerateOptions(now=AT))
    assert len(cells) == len(convertor.columns)
    assert all(isinstance(c, str | int) for c in cells)
    for column, cell in zip(convertor.columns, cells, strict=True):
        assert isinstance(cell, int) == (column.type == "integer"), column.name
    names = [c for c in convertor.columns if c.format == "name"]
    assert len(names) == 1 and names[0].name == "Name"
    assert all(c.priority in (0, 1) and c.description for c in convertor.columns)


def test_a_cell_function_out_of_step_with_its_columns_is_an_error() -> None:
    broken = TableConvertor[core_pb2.Pod]((TableColumnDefinition("Name", format="name"),),
                                          lambda pod, o: [pod.metadata.name, "extra"])
    with pytest.raises(ValueError, match="2 cells for 1 columns"):
        broken.row(core_pb2.Pod(), GenerateOptions(now=AT))


def test_replica_counts_are_integer_cells() -> None:
    rs = manifest.from_dict({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                             "metadata": {"name": "web-1", "creationTimestamp": "2024-01-01T10:30:00Z"},
                             "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                                      "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
                             "status": {"replicas": 3, "readyReplicas": 2}})
    assert isinstance(rs, apps_pb2.ReplicaSet)
    table = generate_table(kinds.resolve("rs"), [rs], at=AT)
    assert table.rows[0].cells == ["web-1", 3, 3, 2, "90m", "app", "nginx", "app=web"]
    rs.spec.ClearField("replicas")  # unset reads as 1, as the API defaults it
    assert apps.desired_replicas(rs.spec) == 1
    assert generate_table(kinds.resolve("rs"), [rs], at=AT).rows[0].cells[1] == 1


def test_stateful_set_shows_ready_of_desired() -> None:
    sts = manifest.from_dict({"apiVersion": "apps/v1", "kind": "StatefulSet",
                              "metadata": {"name": "web", "creationTimestamp": "2024-01-01T11:00:00Z"},
                              "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                                       "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1"},
                                                                            {"name": "log", "image": "busybox"}]}}},
                              "status": {"replicas": 2, "readyReplicas": 1}})
    assert generate_table(kinds.resolve("sts"), [sts], at=AT).rows[0].cells == [
        "web", "1/3", "60m", "nginx,log", "nginx:1,busybox"]


def test_table_json_is_meta_v1_table() -> None:
    pod = manifest.from_dict({"apiVersion": "v1", "kind": "Pod",
                              "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7",
                                           "creationTimestamp": "2024-01-01T11:55:00Z"},
                              "spec": {"containers": [{"name": "app", "image": "nginx"}], "nodeName": "n1"},
                              "status": {"phase": "Running", "podIP": "10.244.0.9"}})
    table = generate_table(kinds.resolve("pods"), [pod], at=AT, resource_version="42")
    data = table.to_dict()
    assert (data["kind"], data["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert data["metadata"] == {"resourceVersion": "42"}
    assert data["columnDefinitions"][0] == {
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": data["columnDefinitions"][0]["description"]}
    assert [c["name"] for c in data["columnDefinitions"] if c["priority"] == 1] == [
        "IP", "Node", "Nominated Node", "Readiness Gates"]
    row = data["rows"][0]
    assert row["cells"] == ["web", "0/1", "Running", "0", "5m", "10.244.0.9", "n1", "<none>", "<none>"]
    assert row["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7",
                                          "creationTimestamp": "2024-01-01T11:55:00Z"}}
    whole = table.to_dict("Object")["rows"][0]["object"]
    assert (whole["kind"], whole["apiVersion"], whole["spec"]["nodeName"]) == ("Pod", "v1", "n1")
    assert "object" not in table.to_dict("None")["rows"][0]
    assert generate_table(kinds.resolve("pods"), [pod], no_headers=True).to_dict()["columnDefinitions"] == []


def test_http_tables_are_wide_unless_asked_otherwise() -> None:
    # As in Kubernetes' TableConvertor, the server computes every cell as for -o wide.
    svc = core_pb2.Service()
    svc.metadata.name = "lb"
    svc.spec.type = "LoadBalancer"
    for i in range(3):
        svc.status.load_balancer.ingress.add(ip=f"192.168.56.20{i}")
    external = [c.name for c in core.SERVICE.columns].index("External-IP")
    assert generate_table(kinds.resolve("svc"), [svc]).rows[0].cells[external] == (
        "192.168.56.200,192.168.56.201,192.168.56.202")
    assert generate_table(kinds.resolve("svc"), [svc], wide=False).rows[0].cells[external] == "192.168.56.20..."


# ---------------------------------------------------------------- cells, computed as kubectl does


@pytest.mark.parametrize(("seconds", "expected"), [
    (0, "0s"), (-1, "0s"), (-5, "<invalid>"), (45, "45s"), (119, "119s"), (120, "2m"), (192, "3m12s"),
    (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"), (4 * 3600 + 5 * 60, "4h5m"), (47 * 3600, "47h"),
    (2 * 86400 + 3 * 3600, "2d3h"), (30 * 86400, "30d"), (800 * 86400, "2y70d"), (9 * 365 * 86400, "9y"),
])
def test_age_is_formatted_like_kubectl(seconds: int, expected: str) -> None:
    assert text.human_duration(seconds) == expected


def _pod(phase: str = "", **status: Any) -> core_pb2.Pod:
    data: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                            "spec": {"containers": [{"name": "app", "image": "x"}]},
                            "status": {"phase": phase, **status} if phase else status}
    pod = manifest.from_dict(data)
    assert isinstance(pod, core_pb2.Pod)
    return pod


@pytest.mark.parametrize(("pod", "status"), [
    (_pod(), "Pending"),
    (_pod("Running", containerStatuses=[{"name": "app", "ready": True,
                                         "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}]),
     "Running"),
    (_pod("Pending", containerStatuses=[{"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}}]),
     "ContainerCreating"),
    (_pod("Running", containerStatuses=[{"name": "app", "restartCount": 4,
                                         "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]),
     "CrashLoopBackOff"),
    (_pod("Succeeded", containerStatuses=[{"name": "app", "state": {"terminated": {"reason": "Completed"}}}]),
     "Completed"),
    (_pod("Failed", containerStatuses=[{"name": "app", "state": {"terminated": {"exitCode": 3}}}]),
     "ExitCode:3"),
    (_pod("Failed", reason="Evicted"), "Evicted"),
])
def test_pod_status_follows_kubectl(pod: core_pb2.Pod, status: str) -> None:
    assert core.pod_status(pod) == status


def test_pod_status_init_containers_and_terminating() -> None:
    pod = _pod("Pending", initContainerStatuses=[{"name": "init", "state": {"waiting": {"reason": "PodInitializing"}}}])
    pod.spec.init_containers.add(name="init", image="busybox")
    assert core.pod_status(pod) == "Init:0/1"
    pod.status.init_container_statuses[0].state.Clear()
    pod.status.init_container_statuses[0].state.terminated.exit_code = 1
    pod.status.init_container_statuses[0].state.terminated.reason = "Error"
    assert core.pod_status(pod) == "Init:Error"

    running = _pod("Running")
    running.metadata.deletion_timestamp.GetCurrentTime()
    assert core.pod_status(running) == "Terminating"
    done = _pod("Succeeded")
    done.metadata.deletion_timestamp.GetCurrentTime()
    assert core.pod_status(done) == "Succeeded"


def test_pod_ready_and_restarts() -> None:
    at = dt.datetime(2024, 1, 1, 1, 0, tzinfo=dt.UTC)
    pod = _pod("Running", containerStatuses=[
        {"name": "app", "ready": True, "restartCount": 2,
         "lastState": {"terminated": {"finishedAt": "2024-01-01T00:55:00Z"}}}])
    pod.spec.containers.add(name="sidecar", image="y")
    assert core.pod_ready(pod) == "1/2"
    assert core.pod_restarts(pod, at) == "2 (5m ago)"


def test_node_service_and_endpoint_columns() -> None:
    node = core_pb2.Node()
    assert core.node_status(node) == "Unknown"
    node.status.conditions.add(type="Ready", status="False")
    node.spec.unschedulable = True
    assert core.node_status(node) == "NotReady,SchedulingDisabled"
    assert core.node_roles(node) == "<none>"
    node.metadata.labels["node-role.kubernetes.io/control-plane"] = ""
    node.metadata.labels["node-role.kubernetes.io/worker"] = ""
    assert core.node_roles(node) == "control-plane,worker"

    svc = core_pb2.Service()
    svc.spec.type = "LoadBalancer"
    svc.spec.ports.add(port=80, node_port=30080, protocol="TCP")
    svc.spec.ports.add(port=53, protocol="UDP")
    assert core.service_ports(svc) == "80:30080/TCP,53/UDP"
    assert core.service_external_ip(svc) == "<pending>"
    svc.status.load_balancer.ingress.add(ip="192.168.56.200")
    assert core.service_external_ip(svc) == "192.168.56.200"
    for i in range(1, 4):
        svc.status.load_balancer.ingress.add(ip=f"192.168.56.20{i}")
    # kubectl shortens a long ingress list to 16 characters, except with -o wide.
    assert core.service_external_ip(svc) == "192.168.56.20..."
    assert core.service_external_ip(svc, wide=True) == "192.168.56.200,192.168.56.201,192.168.56.202,192.168.56.203"

    ep = core_pb2.Endpoints()
    assert core.endpoints_text(ep) == "<none>"
    subset = ep.subsets.add()
    subset.ports.add(port=80)
    for i in range(5):
        subset.addresses.add(ip=f"10.244.0.{i}")
    assert core.endpoints_text(ep) == "10.244.0.0:80,10.244.0.1:80,10.244.0.2:80 + 2 more..."


def test_hpa_targets_show_current_over_target() -> None:
    hpa = manifest.from_dict({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5, "metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                        "averageUtilization": 80}}}]}})
    assert isinstance(hpa, autoscaling_pb2.HorizontalPodAutoscaler)
    assert autoscaling.hpa_targets(hpa) == "cpu: <unknown>/80%"
    metric = hpa.status.current_metrics.add(type="Resource")
    metric.resource.name = "cpu"
    metric.resource.current.average_utilization = 40
    assert autoscaling.hpa_targets(hpa) == "cpu: 40%/80%"
    cells = generate_table(kinds.resolve("hpa"), [hpa]).rows[0].cells
    assert cells[:6] == ["web", "Deployment/web", "cpu: 40%/80%", "<unset>", 5, 0]


def test_quota_request_and_limit_columns() -> None:
    # kubectl get quota: used/hard per resource from the status, limits.* apart, sorted by name.
    quota = manifest.from_dict({"apiVersion": "v1", "kind": "ResourceQuota",
                                "metadata": {"name": "team", "creationTimestamp": "2024-01-01T11:00:00Z"},
                                "spec": {"hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "1Gi"}},
                                "status": {"hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "1Gi"},
                                           "used": {"pods": "2", "requests.cpu": "500m"}}})
    assert generate_table(kinds.resolve("quota"), [quota], at=AT).rows[0].cells == [
        "team", "60m", "pods: 2/10, requests.cpu: 500m/2", "limits.memory: 0/1Gi"]


def test_roles_show_their_creation_time_and_bindings_whom_they_bind() -> None:
    role = manifest.from_dict({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                               "metadata": {"name": "reader", "namespace": "a",
                                            "creationTimestamp": "2024-01-01T11:00:00Z"}})
    assert generate_table(kinds.resolve("roles"), [role], at=AT).rows[0].cells == ["reader", "2024-01-01T11:00:00Z"]
    binding = manifest.from_dict({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "viewers", "creationTimestamp": "2024-01-01T11:58:00Z"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "ann"}, {"kind": "Group", "name": "devs"},
                     {"kind": "User", "name": "bob"}, {"kind": "ServiceAccount", "name": "ci", "namespace": "ops"}]})
    assert generate_table(kinds.resolve("clusterrolebindings"), [binding], at=AT).rows[0].cells == [
        "viewers", "ClusterRole/view", "2m", "ann, bob", "devs", "ops/ci"]
