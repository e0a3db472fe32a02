"""Which fields Kubernetes requires: the `required` lists of its OpenAPI schemas.

Kubernetes marks a field required when its Go field is not `omitempty` and not
`+optional`; proto3 has no such mark and Flotilla's .proto options declare none yet,
so the list lives here, by message name (as in the .proto) and JSON field name. Only
what Kubernetes itself publishes as required: `kubectl explain` prints `-required-`
beside these, and clients that validate against the schema refuse objects without them.
"""

from __future__ import annotations

REQUIRED: dict[str, tuple[str, ...]] = {
    # meta/v1
    "OwnerReference": ("apiVersion", "kind", "name", "uid"),
    "LabelSelectorRequirement": ("key", "operator"),
    "Condition": ("type", "status", "lastTransitionTime", "reason", "message"),
    # core/v1
    "Taint": ("key", "effect"),
    "NodeCondition": ("type", "status"),
    "NodeAddress": ("type", "address"),
    "DaemonEndpoint": ("Port",),
    "NodeSystemInfo": ("machineID", "systemUUID", "bootID", "kernelVersion", "osImage", "containerRuntimeVersion",
                       "kubeletVersion", "kubeProxyVersion", "operatingSystem", "architecture"),
    "ObjectFieldSelector": ("fieldPath",),
    "ResourceFieldSelector": ("resource",),
    "KeySelector": ("key",),
    "EnvVar": ("name",),
    "ContainerPort": ("containerPort",),
    "VolumeMount": ("name", "mountPath"),
    "HTTPHeader": ("name", "value"),
    "HTTPGetAction": ("port",),
    "TCPSocketAction": ("port",),
    "GRPCAction": ("port",),
    "Container": ("name",),
    "NodeSelectorRequirement": ("key", "operator"),
    "NodeSelector": ("nodeSelectorTerms",),
    "PreferredSchedulingTerm": ("weight", "preference"),
    "PodAffinityTerm": ("topologyKey",),
    "WeightedPodAffinityTerm": ("weight", "podAffinityTerm"),
    "TopologySpreadConstraint": ("maxSkew", "topologyKey", "whenUnsatisfiable"),
    "KeyToPath": ("key", "path"),
    "HostPathVolumeSource": ("path",),
    "PersistentVolumeClaimVolumeSource": ("claimName",),
    "Volume": ("name",),
    "PodSpec": ("containers",),
    "PodCondition": ("type", "status"),
    "ContainerStatus": ("name", "ready", "restartCount", "image", "imageID"),
    "PodIP": ("ip",),
    "Binding": ("target",),
    "ServicePort": ("port",),
    "PortStatus": ("port", "protocol"),
    "EndpointAddress": ("ip",),
    "EndpointPort": ("port",),
    "Event": ("metadata", "involvedObject"),
    "LimitRangeItem": ("type",),
    "LimitRangeSpec": ("limits",),
    # apps/v1
    "ReplicaSetSpec": ("selector",),
    "ReplicaSetCondition": ("type", "status"),
    "DeploymentSpec": ("selector", "template"),
    "DeploymentCondition": ("type", "status"),
    "DaemonSetSpec": ("selector", "template"),
    "DaemonSetCondition": ("type", "status"),
    "ControllerRevision": ("revision",),
    "StatefulSetSpec": ("selector", "template"),
    "StatefulSetCondition": ("type", "status"),
    # autoscaling
    "CrossVersionObjectReference": ("kind", "name"),
    "MetricTarget": ("type",),
    "ResourceMetricSource": ("name", "target"),
    "ContainerResourceMetricSource": ("name", "target", "container"),
    "MetricIdentifier": ("name",),
    "PodsMetricSource": ("metric", "target"),
    "ObjectMetricSource": ("describedObject", "target", "metric"),
    "ExternalMetricSource": ("metric", "target"),
    "MetricSpec": ("type",),
    "HPAScalingPolicy": ("type", "value", "periodSeconds"),
    "HorizontalPodAutoscalerSpec": ("scaleTargetRef", "maxReplicas"),
    "ResourceMetricStatus": ("name", "current"),
    "MetricStatus": ("type",),
    "HorizontalPodAutoscalerCondition": ("type", "status"),
    "HorizontalPodAutoscalerStatus": ("desiredReplicas",),
    "ScaleStatus": ("replicas",),
    # rbac.authorization.k8s.io/v1
    "PolicyRule": ("verbs",),
    "Subject": ("kind", "name"),
    "RoleRef": ("apiGroup", "kind", "name"),
    "RoleBinding": ("roleRef",),
    "ClusterRoleBinding": ("roleRef",),
    # certificates.k8s.io/v1
    "CertificateSigningRequestSpec": ("request", "signerName"),
    "CertificateSigningRequestCondition": ("type", "status"),
    "CertificateSigningRequest": ("spec",),
    # metrics.k8s.io/v1beta1
    "ContainerMetrics": ("name", "usage"),
    "PodMetrics": ("timestamp", "window", "containers"),
    "NodeMetrics": ("timestamp", "window", "usage"),
    # authorization.k8s.io/v1, authentication.k8s.io/v1
    "SubjectAccessReview": ("spec",),
    "SelfSubjectAccessReview": ("spec",),
    "SelfSubjectRulesReview": ("spec",),
    "SubjectAccessReviewStatus": ("allowed",),
    "TokenReview": ("spec",),
}
