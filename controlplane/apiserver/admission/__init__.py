"""Admission: the ordered plugins every write passes after authorization and before storage.

The plugins, in the order Kubernetes recommends (and runs them in):

    NamespaceLifecycle   nothing new in a missing or terminating namespace
    LimitRanger          a namespace's LimitRanges fill in and bound container resources
    NodeRestriction      a kubelet's credentials reach only its own node's objects
    CertificateApproval  approving or signing a CSR needs `approve`/`sign` on its signer
    ResourceQuota        a namespace's pods stay within its quotas (last: it counts what is admitted)

One module per plugin; interface.py holds the extension points and chain.py runs
them. A new plugin (PodSecurity comes next, before ResourceQuota) is a module
here and one line in `new_chain`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from controlplane.apiserver.admission.certificates import CertificateSubresources
from controlplane.apiserver.admission.chain import Chain
from controlplane.apiserver.admission.interface import CREATE, DELETE, UPDATE, Request
from controlplane.apiserver.admission.limitranger import LimitRanger
from controlplane.apiserver.admission.namespacelifecycle import NamespaceLifecycle
from controlplane.apiserver.admission.noderestriction import NodeRestriction
from controlplane.apiserver.admission.resourcequota import ResourceQuota
from proto import core_pb2

__all__ = ["CREATE", "DELETE", "UPDATE", "Chain", "NamespaceLifecycle", "Request", "new_chain"]


def new_chain(*, namespaces: NamespaceLifecycle,
              stored_pods: Callable[[str], Awaitable[Sequence[core_pb2.Pod]]],
              pods_on_node: Callable[[str], Awaitable[Sequence[core_pb2.Pod]]],
              update_quota_status: Callable[[core_pb2.ResourceQuota], Awaitable[object]]) -> Chain:
    """The apiserver's admission chain, given what its plugins read and write through the registry."""
    return Chain([
        namespaces,
        LimitRanger(),
        NodeRestriction(pods_on_node),
        CertificateSubresources(),
        ResourceQuota(stored_pods, update_quota_status),
    ])
