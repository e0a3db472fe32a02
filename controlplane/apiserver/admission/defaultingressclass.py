"""DefaultIngressClass: an Ingress created without a class gets the cluster's default one.

As Kubernetes' plugin of that name: an Ingress created with neither
`spec.ingressClassName` nor the older `kubernetes.io/ingress.class` annotation
is given the IngressClass annotated `ingressclass.kubernetes.io/is-default-class:
"true"`; with several, the newest (Kubernetes picks so since 1.28, rather than
refusing). With none, the Ingress stays without a class, and no controller
serves it until someone names one. Updates are left alone: a class, once
chosen, is the user's to change.

It reads IngressClasses from a cache the registry keeps current with a watch
(a PolicyWatcher, as DefaultStorageClass does).
"""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver.admission.interface import CREATE, Request
from proto import kinds, networking_pb2
from proto.wellknown import ANNOTATION_DEFAULT_INGRESS_CLASS, ANNOTATION_INGRESS_CLASS

NAME = "DefaultIngressClass"


def default_class(classes: list[networking_pb2.IngressClass]) -> networking_pb2.IngressClass | None:
    """The default IngressClass among `classes`: the newest annotated one (then by name), or None."""
    defaults = [ic for ic in classes if ic.metadata.annotations.get(ANNOTATION_DEFAULT_INGRESS_CLASS) == "true"]
    if not defaults:
        return None
    return max(defaults, key=lambda ic: (ic.metadata.creation_timestamp.ToNanoseconds(), ic.metadata.name))


class DefaultIngressClass:
    """A mutating plugin: Ingresses, on create."""

    NAME = NAME
    policy_kind = kinds.resolve("ingressclasses")

    def __init__(self) -> None:
        self.classes: dict[str, networking_pb2.IngressClass] = {}

    def observe(self, event_type: str, obj: Message) -> None:
        assert isinstance(obj, networking_pb2.IngressClass)
        if event_type == "DELETED":
            self.classes.pop(obj.metadata.name, None)
        else:
            self.classes[obj.metadata.name] = obj

    def reset(self) -> None:
        self.classes.clear()

    def admit(self, request: Request) -> None:
        if request.operation != CREATE or request.subresource or not isinstance(request.obj, networking_pb2.Ingress):
            return
        ing = request.obj
        if ing.spec.HasField("ingress_class_name") or ANNOTATION_INGRESS_CLASS in ing.metadata.annotations:
            return
        found = default_class(list(self.classes.values()))
        if found is not None:
            ing.spec.ingress_class_name = found.metadata.name
