"""The apiserver's watch cache (issue 19): lists and watches served from memory, one etcd watch per resource.

store.py holds one resource's objects and recent changes, watchers.py one client
watch, cacher.py the reflector that keeps a resource's cache in step with etcd
and answers the registry's lists and watches. The registry (registry.py) asks
here first and reads etcd only for what the cache does not serve (continue
tokens, a cache that cannot catch up); `--watch-cache=false` leaves it out.
"""

from controlplane.apiserver.cacher.cacher import DEFAULT_CAPACITY, Cacher, NotFresh, ResourceCache
from controlplane.apiserver.cacher.store import CachedObject, WatchCache
from controlplane.apiserver.cacher.watchers import Event

__all__ = ["DEFAULT_CAPACITY", "CachedObject", "Cacher", "Event", "NotFresh", "ResourceCache", "WatchCache"]
