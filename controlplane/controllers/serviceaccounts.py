"""The service-account controller: a `default` ServiceAccount in every namespace.

As kube-controller-manager's serviceaccount-controller, it watches namespaces and
the accounts named `default`; a namespace without one (new, or whose account was
deleted) gets it back. Pods that name no account run as `default`, and the
ServiceAccount admission plugin refuses pods whose account does not exist, so this
is what lets a fresh namespace run pods at all. A terminating namespace is left
alone: the namespace controller is emptying it.
"""

from __future__ import annotations

import logging

from client import Client, InformerFactory
from controlplane.controllers.pernamespace import PerNamespaceController
from proto import core_pb2
from proto.errors import AlreadyExists, NamespaceTerminating, NotFound

log = logging.getLogger(__name__)

DEFAULT = "default"


class ServiceAccountsController(PerNamespaceController):
    name = "serviceaccount"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 2) -> None:
        super().__init__(client, factory, workers=workers)
        self.accounts = factory.informer(core_pb2.ServiceAccount, field_selector=f"metadata.name={DEFAULT}")
        self.informers = [self.namespaces, self.accounts]
        self.accounts.add_handler(on_delete=lambda sa: self.queue.add(sa.metadata.namespace))

    async def sync(self, key: str) -> None:
        if self.live_namespace(key) is None:
            return
        if self.accounts.store.get(f"{key}/{DEFAULT}") is not None:
            return
        sa = core_pb2.ServiceAccount(api_version="v1", kind="ServiceAccount")
        sa.metadata.name, sa.metadata.namespace = DEFAULT, key
        try:
            await self.client.create(sa)
        except (AlreadyExists, NamespaceTerminating, NotFound):
            return
        log.info("created ServiceAccount %s/%s", key, DEFAULT)
