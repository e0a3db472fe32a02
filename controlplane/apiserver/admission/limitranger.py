"""LimitRanger: a namespace's LimitRanges fill in and bound each container's resources and each claim's size.

On pod create, after defaults and before validation, a container's missing
requests and limits are filled from the namespace's LimitRanges (`defaultRequest`,
`default`) and a container outside their `min`/`max` is refused. On claim
create, an item of type PersistentVolumeClaim bounds `requests.storage` by its
`min`/`max`. LimitRanges are read from a cache the registry keeps current with
a watch.
"""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver.admission.interface import CREATE, Request
from proto import core_pb2, kinds
from proto.errors import Forbidden
from proto.quantity import parse_quantity

NAME = "LimitRanger"


class LimitRanger:
    """A mutating plugin (it may also refuse): pods only, on create."""

    NAME = NAME

    policy_kind = kinds.resolve("limitranges")

    def __init__(self) -> None:
        self.limit_ranges: dict[tuple[str, str], core_pb2.LimitRange] = {}

    def observe(self, event_type: str, obj: Message) -> None:
        meta = obj.metadata  # type: ignore[attr-defined]
        if event_type == "DELETED":
            self.limit_ranges.pop((meta.namespace, meta.name), None)
        else:
            self.limit_ranges[(meta.namespace, meta.name)] = obj  # type: ignore[assignment]

    def reset(self) -> None:
        self.limit_ranges.clear()

    def admit(self, request: Request) -> None:
        if request.operation == CREATE and isinstance(request.obj, core_pb2.Pod):
            self.apply_limit_ranges(request.obj)
        elif request.operation == CREATE and isinstance(request.obj, core_pb2.PersistentVolumeClaim):
            self.bound_claim(request.obj)

    def bound_claim(self, pvc: core_pb2.PersistentVolumeClaim) -> None:
        """Refuse a claim whose requests fall outside a PersistentVolumeClaim item's min/max."""
        for (ns, _), limit_range in sorted(self.limit_ranges.items()):
            if ns != pvc.metadata.namespace:
                continue
            for item in limit_range.spec.limits:
                if item.type == "PersistentVolumeClaim":
                    _limit_claim(pvc, item)

    def apply_limit_ranges(self, pod: core_pb2.Pod) -> None:
        """Fill missing requests/limits from the namespace's LimitRanges; refuse what breaks min/max."""
        ranges = [lr for (ns, _), lr in sorted(self.limit_ranges.items()) if ns == pod.metadata.namespace]
        for limit_range in ranges:
            for item in limit_range.spec.limits:
                if item.type not in ("", "Container"):
                    continue
                for container in pod.spec.containers:
                    _limit_container(pod, container, item)


def _limit_container(pod: core_pb2.Pod, container: core_pb2.Container, item: core_pb2.LimitRangeItem) -> None:
    res = container.resources
    for resource, value in item.default.items():
        if resource not in res.limits:
            res.limits[resource] = value
    for resource, value in item.default_request.items():
        if resource not in res.requests:
            res.requests[resource] = value
    for resource in item.default:
        # As Kubernetes: with only a default limit, the request defaults to the limit.
        if resource not in res.requests:
            res.requests[resource] = res.limits[resource]
    name = f'pods "{pod.metadata.name}"'
    for resource, bound in item.max.items():
        if resource in res.limits and parse_quantity(res.limits[resource]) > parse_quantity(bound):
            raise Forbidden(f"{name} is forbidden: maximum {resource} usage per Container is {bound}, "
                            f"but limit is {res.limits[resource]}")
        if resource not in res.limits:
            raise Forbidden(f"{name} is forbidden: maximum {resource} usage per Container is {bound}, "
                            "but no limit is specified")
    for resource, bound in item.min.items():
        if resource in res.requests and parse_quantity(res.requests[resource]) < parse_quantity(bound):
            raise Forbidden(f"{name} is forbidden: minimum {resource} usage per Container is {bound}, "
                            f"but request is {res.requests[resource]}")


def _limit_claim(pvc: core_pb2.PersistentVolumeClaim, item: core_pb2.LimitRangeItem) -> None:
    """Kubernetes' PersistentVolumeClaimValidateLimitFunc: requests against min and max."""
    requests = pvc.spec.resources.requests
    name, what = f'persistentvolumeclaims "{pvc.metadata.name}"', "per PersistentVolumeClaim"
    for resource, bound in item.min.items():
        if resource not in requests:
            raise Forbidden(f"{name} is forbidden: minimum {resource} usage {what} is {bound}.  No request is "
                            "specified")
        if parse_quantity(requests[resource]) < parse_quantity(bound):
            raise Forbidden(f"{name} is forbidden: minimum {resource} usage {what} is {bound}, but request is "
                            f"{requests[resource]}")
    for resource, bound in item.max.items():
        if resource not in requests:
            raise Forbidden(f"{name} is forbidden: maximum {resource} usage {what} is {bound}.  No request is "
                            "specified")
        if parse_quantity(requests[resource]) > parse_quantity(bound):
            raise Forbidden(f"{name} is forbidden: maximum {resource} usage {what} is {bound}, but request is "
                            f"{requests[resource]}")
