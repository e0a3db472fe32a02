"""The shape of a controller that keeps one object in every namespace (a default account, a CA bundle).

The serviceaccount and root-ca-cert-publisher controllers both key their work
queue by namespace name: a namespace added or changed is a key, and so is the
namespace of a kept object someone deleted or edited. Their resync queues every
namespace (the kept objects' informer has no keys of this kind), and a
namespace being deleted is left alone — the namespace controller is emptying
it, and anything created there now would be refused.
"""

from __future__ import annotations

from client import Client, InformerFactory
from client.controller import Controller
from proto import core_pb2


class PerNamespaceController(Controller):
    """Keys are namespace names; `live_namespace(key)` is the namespace unless gone or terminating."""

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 2) -> None:
        super().__init__(client, factory, workers=workers)
        self.namespaces = factory.informer(core_pb2.Namespace)
        self.namespaces.add_handler(on_add=lambda ns: self.queue.add(ns.metadata.name),
                                    on_update=lambda _old, ns: self.queue.add(ns.metadata.name))

    def resync(self) -> None:
        for key in self.namespaces.store.list_keys():
            self.queue.add(key)

    def live_namespace(self, key: str) -> core_pb2.Namespace | None:
        ns = self.namespaces.store.get(key)
        if ns is None or ns.status.phase == "Terminating" or ns.metadata.HasField("deletion_timestamp"):
            return None
        return ns
