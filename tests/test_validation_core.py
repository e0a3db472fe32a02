"""Validation of the core kinds: pod updates, Node, Service, Endpoints, Event, ConfigMap, Secret."""

from __future__ import annotations

import copy
from typing import Any

from tests.test_validation_support import errors_of, paths_of, pod, service, update_errors

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


def test_event_needs_what_it_is_about() -> None:
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "nginx.17a"}, "reason": "Scheduled"}
    assert errors_of(event) == [("involvedObject", "Required value")]
    event["involvedObject"] = {"kind": "Pod", "name": "nginx", "namespace": "other"}
    assert errors_of(event) == [
        ("involvedObject.namespace", 'Invalid value: "other": does not match event.namespace')]
    event["involvedObject"] = {"kind": "Node", "name": "node-1"}  # cluster-scoped: recorded in "default"
    assert errors_of(event) == []


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
