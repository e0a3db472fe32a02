"""The root-CA publisher: the `kube-root-ca.crt` ConfigMap, with the cluster's CA bundle, in every namespace.

As kube-controller-manager's root-ca-cert-publisher (given --root-ca-file), each
namespace gets a ConfigMap `kube-root-ca.crt` whose `ca.crt` is the CA that signed
the apiserver's serving certificate. Every pod's `kube-api-access-*` volume projects
it, so a client in a pod can verify `https://kubernetes.default.svc`. A ConfigMap
edited or deleted by someone is put back.
"""

from __future__ import annotations

import logging

from client import Client, InformerFactory
from client.controller import copy
from controlplane.controllers.pernamespace import PerNamespaceController
from proto import core_pb2
from proto.errors import AlreadyExists, Conflict, NamespaceTerminating, NotFound

log = logging.getLogger(__name__)

NAME = "kube-root-ca.crt"
KEY = "ca.crt"
DESCRIPTION = "kubernetes.io/description"
# Kubernetes' own words on what the bundle is for.
DESCRIPTION_TEXT = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
                    "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
                    "guaranteed across distributions of Kubernetes clusters.")


class RootCACertPublisher(PerNamespaceController):
    name = "root-ca-cert-publisher"

    def __init__(self, client: Client, factory: InformerFactory, ca_pem: str, *, workers: int = 2) -> None:
        super().__init__(client, factory, workers=workers)
        self.ca_pem = ca_pem
        self.config_maps = factory.informer(core_pb2.ConfigMap, field_selector=f"metadata.name={NAME}")
        self.informers = [self.namespaces, self.config_maps]
        self.config_maps.add_handler(on_update=lambda _old, cm: self.queue.add(cm.metadata.namespace),
                                     on_delete=lambda cm: self.queue.add(cm.metadata.namespace))

    async def sync(self, key: str) -> None:
        if self.live_namespace(key) is None:
            return
        current = self.config_maps.store.get(f"{key}/{NAME}")
        try:
            if current is None:
                cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
                cm.metadata.name, cm.metadata.namespace = NAME, key
                cm.metadata.annotations[DESCRIPTION] = DESCRIPTION_TEXT
                cm.data[KEY] = self.ca_pem
                await self.client.create(cm)
                log.info("published %s in %s", NAME, key)
            elif dict(current.data) != {KEY: self.ca_pem} or current.binary_data:
                fixed = copy(current)
                fixed.data.clear()
                fixed.binary_data.clear()
                fixed.data[KEY] = self.ca_pem
                fixed.metadata.annotations[DESCRIPTION] = DESCRIPTION_TEXT
                await self.client.update(fixed)
        except (AlreadyExists, NamespaceTerminating, NotFound):
            return
        except Conflict:
            self.queue.add_after(key, 0.5)  # the informer brings the newer copy; compare again
