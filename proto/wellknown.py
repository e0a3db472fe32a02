"""Well-known names: the labels, annotations and taints every component agrees on.

Kubernetes keeps these in `k8s.io/api/core/v1/well_known_labels.go`,
`well_known_taints.go` and the apps/kubectl annotation constants; here they are
one module so the controllers that write a name and kctl, the scheduler or the
kubelet that read it can never drift apart.
"""

from __future__ import annotations

from typing import Any

# Node labels the kubelet sets on its own Node.
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_OS = "kubernetes.io/os"
LABEL_ARCH = "kubernetes.io/arch"
LABEL_NODE_ROLE_PREFIX = "node-role.kubernetes.io/"

# Labels controllers put on what they create.
LABEL_POD_TEMPLATE_HASH = "pod-template-hash"  # ReplicaSets (and their pods) of a Deployment
# A Job's pods (and, by defaulting, the Job): the server selects a Job's pods by its uid.
LABEL_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"
LABEL_LEGACY_CONTROLLER_UID = "controller-uid"  # the unprefixed twins older clients select on
LABEL_LEGACY_JOB_NAME = "job-name"
# An Indexed Job's pod: its index, as a label and an annotation (the env var reads the annotation).
JOB_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
# The finalizer that keeps a Job's pod until the Job controller has counted it.
FINALIZER_JOB_TRACKING = "batch.kubernetes.io/job-tracking"

# Taints the control plane manages (node lifecycle, cordon) and the control-plane node's own.
TAINT_NODE_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_NODE_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_NODE_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
# NoSchedule taints for a node's pressure conditions (Kubernetes' TaintNodesByCondition).
TAINT_NODE_DISK_PRESSURE = "node.kubernetes.io/disk-pressure"
TAINT_NODE_MEMORY_PRESSURE = "node.kubernetes.io/memory-pressure"
TAINT_NODE_PID_PRESSURE = "node.kubernetes.io/pid-pressure"
TAINT_NODE_NETWORK_UNAVAILABLE = "node.kubernetes.io/network-unavailable"
TAINT_CONTROL_PLANE = "node-role.kubernetes.io/control-plane"

# Annotations.
ANNOTATION_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
ANNOTATION_RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
ANNOTATION_MIRROR_POD = "kubernetes.io/config.mirror"
ANNOTATION_CHANGE_CAUSE = "kubernetes.io/change-cause"
ANNOTATION_REVISION = "deployment.kubernetes.io/revision"
ANNOTATION_DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
ANNOTATION_MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
ANNOTATION_CRONJOB_SCHEDULED = "batch.kubernetes.io/cronjob-scheduled-timestamp"  # a CronJob's Job: its time
ANNOTATION_CRONJOB_INSTANTIATE = "cronjob.kubernetes.io/instantiate"  # "manual": made by `create job --from`


# Storage: the finalizers that keep a claim (or volume) while it is in use, the annotations of
# binding and provisioning (Kubernetes' pv controller and volume scheduling), and the built-in
# local-path provisioner's name.
FINALIZER_PVC_PROTECTION = "kubernetes.io/pvc-protection"
FINALIZER_PV_PROTECTION = "kubernetes.io/pv-protection"
ANNOTATION_DEFAULT_STORAGE_CLASS = "storageclass.kubernetes.io/is-default-class"
ANNOTATION_SELECTED_NODE = "volume.kubernetes.io/selected-node"  # a WaitForFirstConsumer claim's node
ANNOTATION_STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"  # on a claim to provision
ANNOTATION_BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
ANNOTATION_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"  # on a provisioned volume
ANNOTATION_BIND_COMPLETED = "pv.kubernetes.io/bind-completed"  # on a claim the binder bound
ANNOTATION_BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
LOCAL_PATH_PROVISIONER = "flotilla.dev/local-path"
LOCAL_PATH_NODE_PATH = "nodePath"  # its StorageClass parameter: the directory on each node
LOCAL_PATH_DEFAULT_NODE_PATH = "/var/lib/flotilla/local-path"
NFS_PROVISIONER = "flotilla.dev/nfs"  # subdirectories of one NFS export (controlplane/controllers/nfs.py)
NFS_SERVER, NFS_SHARE = "server", "share"  # its StorageClass parameters: the server and the exported path
FINALIZER_PROVISIONER = "external-provisioner.volume.kubernetes.io/finalizer"  # its storage goes first

# EndpointSlices: the Service a slice belongs to (what proxies, DNS and ingress controllers select
# slices by) and who manages it (the endpointslice controller touches only its own).
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
ENDPOINTSLICE_CONTROLLER_NAME = "endpointslice-controller.k8s.io"
LABEL_HEADLESS = "service.kubernetes.io/headless"  # on the slices of a Service without a clusterIP
LABEL_TOPOLOGY_ZONE = "topology.kubernetes.io/zone"  # a Node's zone, copied to its endpoints


def revision_of(obj: Any) -> int:
    """The rollout revision an object's `deployment.kubernetes.io/revision` annotation records (0 if none)."""
    try:
        return int(obj.metadata.annotations.get(ANNOTATION_REVISION, "0"))
    except ValueError:
        return 0

# Ingress (networking.k8s.io/v1): the class new Ingresses get when they name none, the
# annotation that named a class before spec.ingressClassName, and Flotilla's own controller.
ANNOTATION_DEFAULT_INGRESS_CLASS = "ingressclass.kubernetes.io/is-default-class"
ANNOTATION_INGRESS_CLASS = "kubernetes.io/ingress.class"
INGRESS_CONTROLLER_NAME = "flotilla.dev/ingress-haproxy"
DEFAULT_INGRESS_CLASS = "flotilla"  # the class `cluster up` installs
