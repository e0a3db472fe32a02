"""The CSR signer: issues certificates for approved requests to the kubernetes.io signers it serves.

kube-controller-manager signs with the cluster CA given by
`--cluster-signing-cert-file/--cluster-signing-key-file`, for
`kubernetes.io/kube-apiserver-client` (any client), `.../kube-apiserver-client-kubelet`
(kubelets' client certificates) and `kubernetes.io/kubelet-serving`. An approved
request that breaks its signer's rules gets a Failed condition instead. Validity
is the smaller of the request's `expirationSeconds` and `--cluster-signing-duration`
(one year by default), and never outlives the CA.
"""

from __future__ import annotations

import datetime as dt
import logging

from client import Client, InformerFactory, bootstrap, certificates, key_of
from client.controller import Controller, copy
from controlplane.controllers import csrutil
from proto import certificates_pb2
from proto.errors import Conflict, NotFound

log = logging.getLogger(__name__)

SIGNERS = (bootstrap.SIGNER_KUBE_APISERVER_CLIENT, bootstrap.SIGNER_KUBELET_CLIENT, bootstrap.SIGNER_KUBELET_SERVING)
DEFAULT_DURATION = dt.timedelta(days=365)


class CSRSigningController(Controller):
    name = "csrsigning"

    def __init__(self, client: Client, factory: InformerFactory, ca: certificates.KeyPair, *,
                 duration: dt.timedelta = DEFAULT_DURATION, workers: int = 1) -> None:
        super().__init__(client, factory, workers=workers)
        self.ca = ca
        self.duration = duration
        self.csrs = factory.informer(certificates_pb2.CertificateSigningRequest)
        self.informers = [self.csrs]
        self.csrs.add_handler(on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new))

    def _enqueue(self, csr: csrutil.CSR) -> None:
        if csr.spec.signer_name in SIGNERS and csrutil.is_approved(csr) and not csrutil.is_finished(csr):
            self.queue.add(key_of(csr))

    def validity(self, csr: csrutil.CSR) -> dt.timedelta:
        if csr.spec.HasField("expiration_seconds"):
            return min(self.duration, dt.timedelta(seconds=csr.spec.expiration_seconds))
        return self.duration

    async def sync(self, key: str) -> None:
        cached = self.csrs.store.get(key)
        if cached is None or cached.spec.signer_name not in SIGNERS or not csrutil.is_approved(cached) \
                or csrutil.is_finished(cached):
            return
        csr = copy(cached)
        problem = csrutil.signer_problem(csr)
        if problem is None:
            try:
                csr.status.certificate = certificates.sign_csr(self.ca, csr.spec.request, list(csr.spec.usages),
                                                      self.validity(csr))
            except certificates.SigningError as exc:
                problem = str(exc)
        if problem is not None:
            csrutil.add_condition(csr, "Failed", "SignerValidationFailure", problem)
        try:
            await self.client.update_status(csr)
        except (NotFound, Conflict):
            return
        if problem is None:
            log.info("signed %s (%s) for %s", key, csr.spec.signer_name, csrutil.requested_node(csr) or "?")
        else:
            log.warning("refused to sign %s: %s", key, problem)
