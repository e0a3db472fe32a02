"""DefaultIngressClass: an Ingress created without a class gets the cluster's default one.

As Kubernetes' plugin of that name: an Ingress created with neither
`spec.ingressClassName` nor the older `kubernetes.io/ingress.class` annotation
is given the IngressClass annotated `ingressclass.kubernetes.io/is-default-class:
"true"`; with several, the newest (Kubernetes picks so since 1.28, rather than
refusing). With none, the Ingress stays without a class, and no controller
serves it until someone names one. Updates are left alone: a class, once
chosen, is the user's to change.

It reads IngressClasses from a cache the registry keeps current with a watch
(classcache.py, shared with DefaultStorageClass).
"""

from __future__ import annotations

from controlplane.apiserver.admission.classcache import ClassCache
from controlplane.apiserver.admission.interface import CREATE, Request
from proto import kinds, networking_pb2
from proto.wellknown import ANNOTATION_DEFAULT_INGRESS_CLASS, ANNOTATION_INGRESS_CLASS

NAME = "DefaultIngressClass"


class DefaultIngressClass(ClassCache[networking_pb2.IngressClass]):
    """A mutating plugin: Ingresses, on create."""

    NAME = NAME
    policy_kind = kinds.resolve("ingressclasses")
    annotation = ANNOTATION_DEFAULT_INGRESS_CLASS

    def admit(self, request: Request) -> None:
        if request.operation != CREATE or request.subresource or not isinstance(request.obj, networking_pb2.Ingress):
            return
        ing = request.obj
        if ing.spec.HasField("ingress_class_name") or ANNOTATION_INGRESS_CLASS in ing.metadata.annotations:
            return
        found = self.default()
        if found is not None:
            ing.spec.ingress_class_name = found.metadata.name
