"""`kctl describe`: an object as readable sections, ending with its Events.

Pods, nodes, deployments, daemon sets, services, jobs, cron jobs and ingresses have describers shaped like kubectl's
(a pod's containers with their state, a node's conditions and the pods it
runs, a deployment's replica counts and ReplicaSets, a service's ports and
endpoints); every other kind falls back to its fields as nested key/values.
Events are fetched with the field selector involvedObject.name=NAME (and kind),
oldest first. Keys are aligned per block as kubectl's tabwriter does.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message

from client import Client
from controlplane.printers.core import event_last_seen, event_source, event_time
from controlplane.printers.text import NONE, now
from kctl.describe.apps import describe_daemon_set, describe_deployment, describe_stateful_set
from kctl.describe.batch import describe_cron_job, describe_job
from kctl.describe.certificates import describe_csr
from kctl.describe.generic import describe_generic
from kctl.describe.ingress import Lookup, describe_ingress
from kctl.describe.networkpolicy import describe_network_policy
from kctl.describe.nodes import describe_node
from kctl.describe.pods import describe_pod
from kctl.describe.section import Section
from kctl.describe.services import describe_service
from proto import apps_pb2, batch_pb2, certificates_pb2, core_pb2, discovery_pb2, kinds, networking_pb2, selectors
from proto.errors import ApiError
from proto.wellknown import LABEL_SERVICE_NAME

__all__ = ["Section", "describe", "describe_cron_job", "describe_csr", "describe_daemon_set", "describe_deployment",
           "describe_generic", "describe_job", "describe_node", "describe_pod", "describe_service",
           "describe_stateful_set", "events_section"]


def events_section(s: Section, events: Sequence[core_pb2.Event]) -> None:
    if not events:
        s.kv(0, "Events", NONE)
        return
    s.header(0, "Events:")
    at = now()
    rows = [["Type", "Reason", "Age", "From", "Message"]]
    for ev in sorted(events, key=event_time):
        rows.append([ev.type, ev.reason, event_last_seen(ev, at), event_source(ev),
                     ev.message.strip()])
    s.table(1, rows)


async def _events_for(client: Client, obj: Message, kind: kinds.Kind) -> list[core_pb2.Event]:
    meta = obj.metadata  # type: ignore[attr-defined]
    selector = f"involvedObject.name={meta.name},involvedObject.kind={kind.kind}"
    try:
        found = await client.list(core_pb2.Event, meta.namespace if kind.namespaced else "",
                                  field_selector=selector)
    except ApiError:
        return []  # events are a courtesy: describe still shows the object
    return list(found.items)


async def _backends_of(client: Client, ing: networking_pb2.Ingress) -> Lookup:
    """The Services (and their slices) an Ingress names, fetched once each, for its describer."""
    found: dict[str, tuple[core_pb2.Service | None, list[discovery_pb2.EndpointSlice]]] = {}
    names = {p.backend.service.name for r in ing.spec.rules for p in r.http.paths if p.backend.HasField("service")}
    if ing.spec.default_backend.HasField("service"):
        names.add(ing.spec.default_backend.service.name)
    for name in names:
        try:
            svc: core_pb2.Service | None = await client.get(core_pb2.Service, name, ing.metadata.namespace)
            slices = await client.list(discovery_pb2.EndpointSlice, ing.metadata.namespace,
                                       label_selector=f"{LABEL_SERVICE_NAME}={name}")
            found[name] = (svc, list(slices.items))
        except ApiError:
            found[name] = (None, [])
    return lambda name: found.get(name, (None, []))


async def describe(client: Client, kind: kinds.Kind, obj: Message) -> str:
    """The description of one object, related objects and events fetched as needed."""
    ns = obj.metadata.namespace  # type: ignore[attr-defined]
    name = obj.metadata.name  # type: ignore[attr-defined]
    if isinstance(obj, core_pb2.Pod):
        section = describe_pod(obj)
    elif isinstance(obj, core_pb2.Node):
        pods = await client.list(core_pb2.Pod, "", field_selector=f"spec.nodeName={name}")
        section = describe_node(obj, pods.items)
    elif isinstance(obj, apps_pb2.Deployment):
        rs = await client.list(apps_pb2.ReplicaSet, ns,
                               label_selector=str(selectors.from_message(obj.spec.selector)))
        section = describe_deployment(obj, rs.items)
    elif isinstance(obj, apps_pb2.DaemonSet):
        pods = await client.list(core_pb2.Pod, ns, label_selector=str(selectors.from_message(obj.spec.selector)))
        section = describe_daemon_set(obj, pods.items)
    elif isinstance(obj, apps_pb2.StatefulSet):
        pods = await client.list(core_pb2.Pod, ns, label_selector=str(selectors.from_message(obj.spec.selector)))
        section = describe_stateful_set(obj, pods.items)
    elif isinstance(obj, batch_pb2.Job):
        section = describe_job(obj)
    elif isinstance(obj, batch_pb2.CronJob):
        section = describe_cron_job(obj)
    elif isinstance(obj, certificates_pb2.CertificateSigningRequest):
        section = describe_csr(obj, kind)
    elif isinstance(obj, core_pb2.Service):
        # As kubectl 1.32: the Service's EndpointSlices, not its v1 Endpoints.
        try:
            slices = (await client.list(discovery_pb2.EndpointSlice, ns,
                                        label_selector=f"{LABEL_SERVICE_NAME}={name}")).items
        except ApiError:
            slices = []
        section = describe_service(obj, list(slices))
    elif isinstance(obj, networking_pb2.NetworkPolicy):
        section = describe_network_policy(obj)
    elif isinstance(obj, networking_pb2.Ingress):
        section = describe_ingress(obj, await _backends_of(client, obj))
    else:
        section = describe_generic(obj, kind)
    events_section(section, await _events_for(client, obj, kind))
    return section.render()
