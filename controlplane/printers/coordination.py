"""Table columns of coordination.k8s.io/v1 Leases: who holds each (node heartbeats, leader election)."""

from __future__ import annotations

from controlplane.printers.table import AGE, NAME, TableColumnDefinition, TableConvertor
from controlplane.printers.text import age
from proto import coordination_pb2

LEASE = TableConvertor[coordination_pb2.Lease]((
    NAME,
    TableColumnDefinition("Holder", description="The identity of the holder of the current lease."),
    AGE,
), lambda lease, o: [lease.metadata.name, lease.spec.holder_identity, age(lease, o.now)])
