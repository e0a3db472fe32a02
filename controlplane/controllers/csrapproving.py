"""The CSR approver: approves kubelets' client certificate requests, and nothing else.

A node joining with a bootstrap token (user `system:bootstrap:<id>`, group
`system:bootstrappers`) asks for `CN=system:node:<name>, O=system:nodes` from the
signer `kubernetes.io/kube-apiserver-client-kubelet`; a node renewing asks for
its own name with its current certificate. Those requests are approved here,
through the approval subresource, as kube-controller-manager's csrapproving
controller does. Everything else (other signers, other subjects, other
requesters) waits for a person: `kctl certificate approve|deny NAME`.
"""

from __future__ import annotations

import logging

from client import Client, InformerFactory, bootstrap, key_of
from client.controller import Controller, copy
from controlplane.controllers import csrutil
from proto import certificates_pb2
from proto.errors import Conflict, NotFound

log = logging.getLogger(__name__)


def auto_approval(csr: csrutil.CSR) -> str | None:
    """The reason to approve `csr` on the cluster's behalf; None when a person must decide."""
    if csr.spec.signer_name != bootstrap.SIGNER_KUBELET_CLIENT or csrutil.node_client_problem(csr) is not None:
        return None
    if bootstrap.BOOTSTRAPPERS_GROUP in csr.spec.groups:
        return "Auto approving kubelet client certificate requested with a bootstrap token."
    if bootstrap.NODES_GROUP in csr.spec.groups and csr.spec.username == csrutil.requested_node(csr):
        return "Auto approving self kubelet client certificate renewal."
    return None


class CSRApprovingController(Controller):
    name = "csrapproving"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 1) -> None:
        super().__init__(client, factory, workers=workers)
        self.csrs = factory.informer(certificates_pb2.CertificateSigningRequest)
        self.informers = [self.csrs]
        self.csrs.add_handler(on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new))

    def _enqueue(self, csr: csrutil.CSR) -> None:
        if not csrutil.is_approved(csr) and not csrutil.is_finished(csr):
            self.queue.add(key_of(csr))

    async def sync(self, key: str) -> None:
        cached = self.csrs.store.get(key)
        if cached is None or csrutil.is_approved(cached) or csrutil.is_finished(cached):
            return
        message = auto_approval(cached)
        if message is None:
            return  # a person decides
        csr = copy(cached)
        csrutil.add_condition(csr, "Approved", "AutoApproved", message)
        try:
            await self.client.update_approval(csr)
        except (NotFound, Conflict):
            return  # deleted, or changed under us: the informer brings the new version back here
        log.info("approved %s for %s (requested by %s)", key, csrutil.requested_node(csr), csr.spec.username)
