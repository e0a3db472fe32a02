"""Table columns of discovery.k8s.io/v1 EndpointSlice (Kubernetes' printEndpointSlice).

A slice shows its address type, up to three of its ports and up to three of its
addresses (then ` + N more...`), and `<unset>` where it has none — a Service
without endpoints keeps one such empty placeholder slice.
"""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.printers.table import AGE, NAME, Cell, GenerateOptions, TableColumnDefinition, TableConvertor
from controlplane.printers.text import age
from proto import discovery_pb2

UNSET = "<unset>"
_SHOWN = 3  # kubectl lists at most this many ports and addresses


def list_with_more(items: Iterable[str], limit: int = _SHOWN) -> str:
    """`a,b,c + 2 more...`; `<unset>` when empty (listWithMoreString)."""
    values = list(items)
    text = ",".join(values[:limit])
    if len(values) > limit:
        return f"{text} + {len(values) - limit} more..."
    return text or UNSET


def port_text(port: discovery_pb2.EndpointSlice.EndpointPort) -> str:
    """A port's number, else its name, else `*` (every port)."""
    if port.HasField("port"):
        return str(port.port)
    return port.name if port.HasField("name") else "*"


def _cells(eps: discovery_pb2.EndpointSlice, o: GenerateOptions) -> list[Cell]:
    addresses = (address for endpoint in eps.endpoints for address in endpoint.addresses)
    return [eps.metadata.name, eps.address_type, list_with_more(port_text(p) for p in eps.ports),
            list_with_more(addresses), age(eps, o.now)]


ENDPOINT_SLICE = TableConvertor[discovery_pb2.EndpointSlice]((
    NAME,
    TableColumnDefinition("AddressType", description="addressType specifies the type of address carried by this "
                          "EndpointSlice. All addresses in this slice must be the same type. This field is immutable "
                          "after creation."),
    TableColumnDefinition("Ports", description="ports specifies the list of network ports exposed by each endpoint "
                          "in this slice. Each port must have a unique name."),
    TableColumnDefinition("Endpoints", description="endpoints is a list of unique endpoints in this slice. Each "
                          "slice may include a maximum of 1000 endpoints."),
    AGE,
), _cells)
