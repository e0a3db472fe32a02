"""What a pod spec may say: containers, resources, env, volumes, probes, scheduling constraints."""

from __future__ import annotations

from controlplane.apiserver.strategies import validate
from controlplane.apiserver.validation.meta import is_dns1123_label
from proto.kinds import for_message
from proto.manifest import from_dict
from tests.test_validation_support import admit, as_pod, container, errors_of, pod

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
