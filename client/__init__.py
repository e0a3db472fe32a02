"""The client side of the API: typed client, kubeconfig, informers and work queues.

Everything that talks to the apiserver (scheduler, controllers, kubelet, proxy,
kctl) goes through this package, so retries, caching and error types behave the
same everywhere.
"""

from client.api import Client, ObjectList, WatchEvent
from client.informer import Informer, InformerFactory, enqueue
from client.store import Store, field_index, key_of, label_index, split_key
from client.workqueue import ShutDown, WorkQueue, run_workers

__all__ = [
    "Client",
    "Informer",
    "InformerFactory",
    "ObjectList",
    "ShutDown",
    "Store",
    "WatchEvent",
    "WorkQueue",
    "enqueue",
    "field_index",
    "key_of",
    "label_index",
    "run_workers",
    "split_key",
]
