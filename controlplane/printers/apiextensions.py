"""Table columns of apiextensions.k8s.io/v1 CustomResourceDefinitions: NAME and CREATED AT, as Kubernetes prints them.

The custom resources a CRD adds print the columns the CRD declares
(controlplane/apiserver/crd/printing.py), not these.
"""

from __future__ import annotations

from controlplane.printers.table import CREATED_AT, NAME, TableConvertor
from controlplane.printers.text import created_at
from proto import apiextensions_pb2

CUSTOM_RESOURCE_DEFINITION = TableConvertor[apiextensions_pb2.CustomResourceDefinition](
    (NAME, CREATED_AT), lambda crd, o: [crd.metadata.name, created_at(crd)])
