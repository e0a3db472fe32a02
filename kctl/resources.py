"""What the user named on the command line: resource types and objects.

kubectl accepts `pods`, `po`, `pod/web`, `po,svc`, `deployments.apps` and
`all`; this module turns those arguments into (Kind, names) requests, using
the resource table in proto/kinds.py, and names objects the way kubectl
prints them (`deployment.apps/web`, `pod "web"`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import Message

from client import Client
from kctl.errors import CliError
from proto import kinds
from proto.errors import ApiError, NotFound

# Kubernetes' group order in discovery, which is the order `kubectl get all` prints groups in.
_GROUP_ORDER = ("", "apps", "autoscaling", "batch")


def _all_category() -> tuple[str, ...]:
    """`kubectl get all`: the kinds the kinds table puts in the `all` category, group by group, by name."""
    members = [k for k in kinds.KINDS if "all" in k.categories]
    def order(k: kinds.Kind) -> tuple[int, str]:
        rank = _GROUP_ORDER.index(k.group) if k.group in _GROUP_ORDER else len(_GROUP_ORDER)
        return rank, k.resource
    return tuple(k.resource for k in sorted(members, key=order))


ALL = _all_category()


@dataclass
class Request:
    """One kind and the names asked for (none = list them all)."""

    kind: kinds.Kind
    names: list[str] = field(default_factory=list)


def resolve(name: str) -> kinds.Kind:
    """The kind meant by `po`, `pods`, `Pod`; an unknown type is a client-side error."""
    try:
        return kinds.resolve(name)
    except NotFound as exc:
        raise CliError(str(exc)) from None


def kind_ref(kind: kinds.Kind) -> str:
    """`pod`, `deployment.apps`, `lease.coordination.k8s.io`: kubectl's singular.group."""
    group = kind.group
    return f"{kind.singular}.{group}" if group else kind.singular


def object_ref(kind: kinds.Kind, name: str) -> str:
    """`deployment.apps/web`, as -o name and apply print it."""
    return f"{kind_ref(kind)}/{name}"


def quoted_ref(kind: kinds.Kind, name: str) -> str:
    """`deployment.apps "web"`, as delete prints it."""
    return f'{kind_ref(kind)} "{name}"'


def ref_of(obj: Message) -> str:
    return object_ref(kinds.for_message(obj), obj.metadata.name)  # type: ignore[attr-defined]


def parse_requests(args: tuple[str, ...] | list[str]) -> list[Request]:
    """`TYPE[,TYPE...] [NAME...]` or `TYPE/NAME...` as requests, one per kind in order."""
    if not args:
        raise CliError("you must specify the type of resource. Use \"kctl api-resources\" "
                       "for a complete list of supported resources")
    if "/" in args[0]:
        requests: dict[str, Request] = {}
        for arg in args:
            type_name, slash, name = arg.partition("/")
            if not slash or not name or not type_name:
                raise CliError(f"there is no need to specify a resource type as a separate argument when "
                               f"passing arguments in resource/name form (e.g. 'kctl get resource/<name>' "
                               f"instead of 'kctl get resource resource/<name>'): {arg!r}")
            kind = resolve(type_name)
            requests.setdefault(kind.resource, Request(kind)).names.append(name)
        return list(requests.values())
    names = list(args[1:])
    if any("/" in n for n in names):
        raise CliError("there is no need to specify a resource type as a separate argument when passing "
                       "arguments in resource/name form (e.g. 'kctl get resource/<name>' instead of "
                       "'kctl get resource resource/<name>')")
    out: list[Request] = []
    seen: set[str] = set()
    for type_name in args[0].split(","):
        if not type_name:
            continue
        expanded = ALL if type_name == "all" else (type_name,)
        for each in expanded:
            kind = resolve(each)
            if kind.resource not in seen:
                seen.add(kind.resource)
                out.append(Request(kind, list(names)))
    return out


async def select(client: Client, request: Request, namespace: str, *, label_selector: str = "",
                 field_selector: str = "") -> tuple[list[Message], list[ApiError]]:
    """The objects a request names (each fetched; misses returned as errors) or lists."""
    cls = request.kind.message
    if not request.names:
        found = await client.list(cls, namespace, label_selector=label_selector,
                                  field_selector=field_selector)
        return list(found.items), []
    objs: list[Message] = []
    errors: list[ApiError] = []
    for name in request.names:
        try:
            objs.append(await client.get(cls, name, namespace))
        except NotFound as exc:
            errors.append(exc)
    return objs, errors


def no_resources(namespace: str, kinds_asked: list[kinds.Kind]) -> str:
    """kubectl's note for an empty result, printed on stderr."""
    if namespace and any(k.namespaced for k in kinds_asked):
        return f"No resources found in {namespace} namespace."
    return "No resources found"
