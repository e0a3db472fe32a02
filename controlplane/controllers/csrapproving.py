"""The CSR approver: approves kubelets' client certificate requests, and nothing else.

A node joining with a bootstrap token (user `system:bootstrap:<id>`, group
`system:bootstrappers`) asks for `CN=system:node:<name>, O=system:nodes` from the
signer `kubernetes.io/kube-apiserver-client-kubelet`; a node renewing asks for
its own name with its current certificate. Those requests are approved here,
through the approval subresource, as kube-controller-manager's csrapproving
controller does. Everything else (other signers, other subjects, other
requesters) waits for a person: `kctl certificate approve|deny NAME`.

Stricter than Kubernetes in one respect: a bootstrap token vouches only while
its Secret exists, and when the Secret names the nodes it is for (Flotilla's
`node-names` key: `kctl token create --node NAME`, and the token `kctl
cluster up` makes for its workers), only for those names. A request asking
for any other node's identity is left for a person, so one leaked join token
cannot mint a certificate for a node that already runs (and so read the
Secrets of that node's pods). A request that arrives before the Secret reaches
this controller's cache is looked at again when the Secret does.
"""

from __future__ import annotations

import logging

from client import Client, InformerFactory, bootstrap, key_of
from client.controller import Controller, copy
from controlplane.controllers import csrutil
from proto import certificates_pb2, core_pb2
from proto.errors import Conflict, NotFound

log = logging.getLogger(__name__)


def auto_approval(csr: csrutil.CSR, token: core_pb2.Secret | None = None) -> str | None:
    """The reason to approve `csr` on the cluster's behalf; None when a person must decide.

    `token` is the bootstrap token Secret the requester authenticated with, if the requester
    is a bootstrap token and its Secret is known.
    """
    if csr.spec.signer_name != bootstrap.SIGNER_KUBELET_CLIENT or csrutil.node_client_problem(csr) is not None:
        return None
    requested = csrutil.requested_node(csr)
    if bootstrap.BOOTSTRAPPERS_GROUP in csr.spec.groups:
        if token is None:
            return None  # the token is gone (or not seen yet): nothing vouches for the request
        intended = bootstrap.node_names_of(token)
        if intended and requested.removeprefix(bootstrap.NODE_USER_PREFIX) not in intended:
            return None
        return "Auto approving kubelet client certificate requested with a bootstrap token."
    if bootstrap.NODES_GROUP in csr.spec.groups and csr.spec.username == requested:
        return "Auto approving self kubelet client certificate renewal."
    return None


class CSRApprovingController(Controller):
    name = "csrapproving"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 1) -> None:
        super().__init__(client, factory, workers=workers)
        self.csrs = factory.informer(certificates_pb2.CertificateSigningRequest)
        # The bootstrap token Secrets (the token cleaner watches the same): what a joining node's token vouches for.
        self.tokens = factory.informer(core_pb2.Secret, bootstrap.TOKEN_NAMESPACE,
                                       field_selector=f"type={bootstrap.TOKEN_SECRET_TYPE}")
        self.informers = [self.csrs, self.tokens]
        self.csrs.add_handler(on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new))
        self.tokens.add_handler(on_add=self._token_seen, on_update=lambda _old, new: self._token_seen(new))

    def _enqueue(self, csr: csrutil.CSR) -> None:
        if not csrutil.is_approved(csr) and not csrutil.is_finished(csr):
            self.queue.add(key_of(csr))

    def _token_seen(self, secret: core_pb2.Secret) -> None:
        """A token's Secret arrived (or changed): the pending requests made with it are decided again."""
        user = bootstrap.BOOTSTRAP_USER_PREFIX + bootstrap.data_text(secret, bootstrap.KEY_TOKEN_ID)
        for csr in self.csrs.store.list():
            if csr.spec.username == user:
                self._enqueue(csr)

    def _token_of(self, csr: csrutil.CSR) -> core_pb2.Secret | None:
        token_id = bootstrap.token_id_of_user(csr.spec.username)
        if token_id is None:
            return None
        secret = self.tokens.store.get_by_name(bootstrap.TOKEN_NAMESPACE, bootstrap.TOKEN_SECRET_PREFIX + token_id)
        return secret if secret is not None and bootstrap.is_token_secret(secret) else None

    async def sync(self, key: str) -> None:
        cached = self.csrs.store.get(key)
        if cached is None or csrutil.is_approved(cached) or csrutil.is_finished(cached):
            return
        token = self._token_of(cached)
        message = auto_approval(cached, token)
        if message is None:
            if token is not None and bootstrap.BOOTSTRAPPERS_GROUP in cached.spec.groups:
                log.warning("not approving %s: it asks for %s, but its bootstrap token is for %s only; "
                            "a person may `kctl certificate approve` it", key, csrutil.requested_node(cached),
                            ", ".join(bootstrap.node_names_of(token)))
            return  # a person decides
        csr = copy(cached)
        csrutil.add_condition(csr, "Approved", "AutoApproved", message)
        try:
            await self.client.update_approval(csr)
        except (NotFound, Conflict):
            return  # deleted, or changed under us: the informer brings the new version back here
        log.info("approved %s for %s (requested by %s)", key, csrutil.requested_node(csr), csr.spec.username)
