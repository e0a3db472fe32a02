"""Admission: the ordered plugins every write passes after authorization and before storage.

The plugins, in the order Kubernetes recommends (and runs them in):

    NamespaceLifecycle      nothing new in a missing or terminating namespace
    LimitRanger             a namespace's LimitRanges fill in and bound container resources
    ServiceAccount          pods run as an existing account (default: `default`) and get its token volume
    NodeRestriction         a kubelet's credentials reach only its own node's objects
    PodSecurity             the namespace's Pod Security Standard (enforce / audit / warn)
    DefaultStorageClass     a claim that names no StorageClass gets the default one
    PersistentVolumeClaimResize  a bound claim grows only if its StorageClass allows expansion
    DefaultIngressClass     an Ingress that names no IngressClass gets the default one
    ReservedHostPorts       no pod takes a hostPort the control plane listens on (Flotilla's own)
    CertificateApproval     approving or signing a CSR needs `approve`/`sign` on its signer
    DenyServiceExternalIPs  no Service claims spec.externalIPs (CVE-2020-8554)
    RBACEscalation          roles and bindings grant only what their author holds (Kubernetes
                            does this in its RBAC storage; here it is one more plugin)
    MutatingAdmissionWebhook    the MutatingWebhookConfigurations' webhooks, one by one (webhook/)
    ValidatingAdmissionWebhook  the ValidatingWebhookConfigurations' webhooks, in parallel (webhook/)
    ResourceQuota           a namespace's objects stay within its quotas (last: it counts what is admitted)

One module (or package) per plugin; interface.py holds the extension points,
chain.py runs them and warnings.py carries what they tell the client and the
audit log besides yes or no (`recording()`). A new plugin is a module here and
one line in `new_chain`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from controlplane.apiserver.admission.certificates import CertificateSubresources
from controlplane.apiserver.admission.chain import Chain
from controlplane.apiserver.admission.defaultingressclass import DefaultIngressClass
from controlplane.apiserver.admission.defaultstorageclass import DefaultStorageClass, PersistentVolumeClaimResize
from controlplane.apiserver.admission.externalips import DenyServiceExternalIPs
from controlplane.apiserver.admission.interface import CREATE, DELETE, UPDATE, Request
from controlplane.apiserver.admission.limitranger import LimitRanger
from controlplane.apiserver.admission.namespacelifecycle import NamespaceLifecycle
from controlplane.apiserver.admission.noderestriction import NodeRestriction, PodsQuery
from controlplane.apiserver.admission.podsecurity import PodSecurity
from controlplane.apiserver.admission.rbacescalation import RBACEscalation
from controlplane.apiserver.admission.reservedhostports import DEFAULT_RESERVED_HOST_PORTS, ReservedHostPorts
from controlplane.apiserver.admission.resourcequota import ResourceQuota, StoredObjects
from controlplane.apiserver.admission.serviceaccount import ServiceAccountAdmission
from controlplane.apiserver.admission.warnings import Recorded, add_annotation, add_warning, recording, warning_header
from controlplane.apiserver.admission.webhook import MutatingAdmissionWebhook, ValidatingAdmissionWebhook
from proto import core_pb2

__all__ = ["CREATE", "DEFAULT_RESERVED_HOST_PORTS", "DELETE", "UPDATE", "Chain", "NamespaceLifecycle", "Recorded",
           "Request", "add_annotation", "add_warning", "new_chain", "recording", "warning_header"]


def new_chain(*, namespaces: NamespaceLifecycle,
              stored_pods: PodsQuery,
              pods_on_node: Callable[[str], Awaitable[Sequence[core_pb2.Pod]]],
              update_quota_status: Callable[[core_pb2.ResourceQuota], Awaitable[object]],
              stored_objects: StoredObjects | None = None) -> Chain:
    """The apiserver's admission chain, given what its plugins read and write through the registry."""
    return Chain([
        namespaces,
        LimitRanger(),
        ServiceAccountAdmission(stored_objects),
        NodeRestriction(pods_on_node, stored_pods),
        PodSecurity(namespaces.get, stored_pods),
        DefaultStorageClass(),
        PersistentVolumeClaimResize(),
        DefaultIngressClass(),
        ReservedHostPorts(),
        CertificateSubresources(),
        DenyServiceExternalIPs(),
        RBACEscalation(),
        MutatingAdmissionWebhook(namespaces.get, stored_objects),
        ValidatingAdmissionWebhook(namespaces.get, stored_objects),
        ResourceQuota(stored_pods, update_quota_status, stored_objects),
    ])
