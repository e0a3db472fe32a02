"""What the ingress agent serves, decided from the caches (pure): Ingresses in, routes and backends out.

`build` turns the Ingresses of our classes, with the Services, EndpointSlices
and TLS Secrets they name, into a `Model` that config.py renders for haproxy:

- **routes**, in the order a request tries them: rules of precise hosts first,
  then of wildcard hosts (`*.a.example`: exactly one more label), then rules
  without a host; within a host Exact paths before Prefix and regex paths,
  longer paths first, then the older Ingress. After a host's own routes comes a
  catch-all for that host (the default backend), as a request for a known host
  never falls through to another host's rules.
- **backends**, one per Service port an Ingress names (by port number or
  name), with the ready endpoints (pod IP, target port) of the Service's
  EndpointSlices. A Service that is missing or has no such port is a backend
  without endpoints (haproxy answers 503).
- the **default backend**: the oldest Ingress's `spec.defaultBackend`, else
  haproxy's own 404.
- **certificates**: each TLS entry's `kubernetes.io/tls` Secret, served by SNI
  for its hosts.

The ingress-nginx annotations tutorials use are read here too:
`rewrite-target` (a regex rewrite of the whole path, `$1`-style captures from
the path; it implies `use-regex`, as in ingress-nginx), `use-regex`,
`ssl-redirect` (on by default for hosts with TLS) and `force-ssl-redirect`,
`proxy-body-size` (`8m`, `0` for no limit), and canaries: an Ingress annotated
`canary: "true"` adds its backend to the route with the same host and path of
another Ingress, taking `canary-weight` percent of requests, or those with the
`canary-by-header` header (`always` / `never`, or `canary-by-header-value`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from client.endpointslices import port_endpoints, usable
from proto import core_pb2, discovery_pb2, networking_pb2

NGINX = "nginx.ingress.kubernetes.io/"
REWRITE_TARGET = NGINX + "rewrite-target"
USE_REGEX = NGINX + "use-regex"
SSL_REDIRECT = NGINX + "ssl-redirect"
FORCE_SSL_REDIRECT = NGINX + "force-ssl-redirect"
PROXY_BODY_SIZE = NGINX + "proxy-body-size"
CANARY = NGINX + "canary"
CANARY_WEIGHT = NGINX + "canary-weight"
CANARY_BY_HEADER = NGINX + "canary-by-header"
CANARY_BY_HEADER_VALUE = NGINX + "canary-by-header-value"

# Path kinds after reading pathType and annotations.
EXACT, PREFIX, REGEX = "Exact", "Prefix", "Regex"
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_HEADER_NAME = re.compile(r"[A-Za-z0-9_-]+")  # header names haproxy's req.hdr() takes as they are


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int


@dataclass(frozen=True)
class Backend:
    """One Service port behind some route: haproxy's backend `name`, its servers the endpoints."""

    name: str
    namespace: str
    service: str
    port: str  # the Ingress's port: a number or a name, as written
    endpoints: tuple[Endpoint, ...] = ()


@dataclass(frozen=True)
class Canary:
    backend: str
    weight: int = 0  # percent of requests (0-100)
    header: str = ""  # requests with this header set to "always" (or header_value) go to the canary
    header_value: str = ""


@dataclass(frozen=True)
class Route:
    """One host + path and where matching requests go."""

    host: str  # "" for any host; "*.a.example" for a wildcard
    path: str  # "" matches every path
    kind: str  # EXACT, PREFIX or REGEX
    backend: str  # a Backend's name; DEFAULT_BACKEND for the default backend
    rewrite: str = ""  # the rewrite-target, in haproxy's \1 spelling ("" for none)
    ssl_redirect: bool = False
    body_limit: int = -1  # bytes; -1 for no limit
    canary: Canary | None = None
    source: str = ""  # "namespace/name" of the Ingress, for logs and ordering


@dataclass(frozen=True)
class Certificate:
    name: str  # "namespace_secret": the PEM file's stem
    pem: bytes  # certificate chain, then key
    hosts: tuple[str, ...]  # SNI names it answers for (empty: the names in the certificate)


DEFAULT_BACKEND = "default"
CATCH_ALL = "~"  # the source of a host's catch-all route (which sorts after the host's own)


@dataclass(frozen=True)
class Model:
    routes: tuple[Route, ...] = ()
    backends: tuple[Backend, ...] = ()
    default_backend: str = DEFAULT_BACKEND  # a Backend's name, or DEFAULT_BACKEND (haproxy's 404)
    certificates: tuple[Certificate, ...] = ()
    problems: tuple[str, ...] = field(default=(), compare=False)  # what was left out, and why


ServiceLookup = Callable[[str, str], core_pb2.Service | None]
SlicesLookup = Callable[[str, str], Sequence[discovery_pb2.EndpointSlice]]
SecretLookup = Callable[[str, str], core_pb2.Secret | None]


def body_size(text: str) -> int:
    """proxy-body-size in bytes ("1m", "512k", "100"); 0 means no limit (returned as -1)."""
    found = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", text)
    if found is None:
        raise ValueError(f"{PROXY_BODY_SIZE}: {text!r} is not a size like 8m, 512k or 0")
    size = int(found.group(1)) * _SIZE_UNITS[found.group(2).lower()]
    return size if size > 0 else -1


def backend_name(namespace: str, service: str, port: str) -> str:
    # haproxy names allow letters, digits, '-', '_', '.', ':'; Kubernetes names fit as they are.
    return f"{namespace}_{service}_{port}"


def _is_true(annotations: dict[str, str], key: str, default: bool = False) -> bool:
    value = annotations.get(key)
    return default if value is None else value.strip().lower() == "true"


def _nginx_rewrite(target: str) -> str:
    """ingress-nginx's `$1` captures in haproxy's `\\1` spelling."""
    return re.sub(r"\$(\d)", r"\\\1", target)


def _path_kind(path: networking_pb2.HTTPIngressPath, regex: bool) -> tuple[str, str]:
    """The path as haproxy matches it: (kind, path)."""
    if regex and path.path_type != "Exact":
        return REGEX, path.path or "/"
    if path.path_type == "Exact":
        return EXACT, path.path
    # Prefix (ImplementationSpecific here too): element-wise, so a trailing slash changes nothing.
    return PREFIX, path.path.rstrip("/")


def unservable(path: str, kind: str, rewrite: str) -> str:
    """Why haproxy cannot carry this path (or rewrite) in its configuration; "" if it can.

    Paths and rewrites go into haproxy.cfg in single quotes, which hold anything but a quote or
    a line break; a regex must compile. One such Ingress must not keep every other from loading.
    """
    for text in (path, rewrite):
        if "'" in text or any(c in text for c in "\r\n\0"):
            return f"{text!r} holds a quote or a line break"
    if kind == REGEX:
        try:
            re.compile(path)
        except re.error as exc:
            return f"{path!r} is not a regular expression ({exc})"
    return ""


def _host_rank(host: str) -> int:
    return 2 if not host else 1 if host.startswith("*.") else 0


def _route_order(route: Route, created: dict[str, tuple[int, str]]) -> tuple[object, ...]:
    kind_rank = {EXACT: 0, REGEX: 1, PREFIX: 1}[route.kind]
    return (_host_rank(route.host), route.host, route.source == CATCH_ALL, kind_rank, -len(route.path),
            created.get(route.source, (0, "")))


def _weight(text: str) -> int:
    try:
        return max(0, min(100, int(text)))
    except ValueError:
        return 0


def _certificate(namespace: str, tls: networking_pb2.IngressTLS, secret: core_pb2.Secret | None,
                 problems: list[str], source: str) -> Certificate | None:
    """The PEM haproxy loads for a TLS entry: the Secret's tls.crt then tls.key."""
    if secret is None:
        problems.append(f"{source}: TLS Secret {namespace}/{tls.secret_name} not found")
        return None
    crt, key = secret.data.get("tls.crt", b""), secret.data.get("tls.key", b"")
    if secret.type != "kubernetes.io/tls" or not crt or not key:
        problems.append(f"{source}: Secret {namespace}/{tls.secret_name} is not a kubernetes.io/tls Secret "
                        "with tls.crt and tls.key")
        return None
    pem = crt.rstrip(b"\n") + b"\n" + key.rstrip(b"\n") + b"\n"
    return Certificate(f"{namespace}_{tls.secret_name}", pem, tuple(tls.hosts))


def _service_endpoints(svc: core_pb2.Service | None, slices: Sequence[discovery_pb2.EndpointSlice],
                       port: networking_pb2.ServiceBackendPort) -> tuple[Endpoint, ...]:
    """The ready endpoints of the Service port an Ingress backend names, by number or name."""
    if svc is None or svc.spec.type == "ExternalName":
        return ()
    for service_port in svc.spec.ports:
        if (port.name and service_port.name == port.name) or (port.number and service_port.port == port.number):
            if (service_port.protocol or "TCP") != "TCP":
                continue
            found = usable(port_endpoints(slices, service_port.name))
            return tuple(Endpoint(e.ip, e.port) for e in found)
    return ()


def build(ingresses: Iterable[networking_pb2.Ingress], services: ServiceLookup, slices: SlicesLookup,
          secrets: SecretLookup) -> Model:
    """The Model of `ingresses` (already those of our classes), reading what they name from the lookups."""
    ordered = sorted(ingresses, key=lambda i: (i.metadata.creation_timestamp.ToNanoseconds(),
                                               i.metadata.namespace, i.metadata.name))
    created = {f"{i.metadata.namespace}/{i.metadata.name}": (i.metadata.creation_timestamp.ToNanoseconds(),
                                                             f"{i.metadata.namespace}/{i.metadata.name}")
               for i in ordered}
    backends: dict[str, Backend] = {}
    certificates: dict[str, Certificate] = {}
    problems: list[str] = []

    def backend_of(namespace: str, backend: networking_pb2.IngressBackend) -> str:
        if not backend.HasField("service"):
            return DEFAULT_BACKEND  # a resource backend: not something haproxy can send to
        svc_backend = backend.service
        port_text = svc_backend.port.name or str(svc_backend.port.number)
        name = backend_name(namespace, svc_backend.name, port_text)
        if name not in backends:
            svc = services(namespace, svc_backend.name)
            endpoints = _service_endpoints(svc, slices(namespace, svc_backend.name), svc_backend.port)
            backends[name] = Backend(name, namespace, svc_backend.name, port_text, endpoints)
        return name

    default = DEFAULT_BACKEND
    routes: list[Route] = []
    canaries: list[tuple[networking_pb2.Ingress, str, str, str, Canary]] = []
    for ing in ordered:
        namespace, notes = ing.metadata.namespace, dict(ing.metadata.annotations)
        source = f"{namespace}/{ing.metadata.name}"
        is_canary = _is_true(notes, CANARY)
        if ing.spec.HasField("default_backend") and default == DEFAULT_BACKEND and not is_canary:
            default = backend_of(namespace, ing.spec.default_backend)
        rewrite = notes.get(REWRITE_TARGET, "")
        regex = _is_true(notes, USE_REGEX) or bool(rewrite)
        try:
            limit = body_size(notes[PROXY_BODY_SIZE]) if PROXY_BODY_SIZE in notes else -1
        except ValueError as exc:
            problems.append(f"{source}: {exc}")
            limit = -1
        tls_hosts = {h for tls in ing.spec.tls for h in tls.hosts}
        redirect_all = _is_true(notes, FORCE_SSL_REDIRECT)
        for rule in ing.spec.rules:
            for http_path in rule.http.paths:
                kind, path = _path_kind(http_path, regex)
                why = unservable(path, kind, rewrite)
                if why:
                    problems.append(f"{source}: path left out: {why}")
                    continue
                backend = backend_of(namespace, http_path.backend)
                if is_canary:
                    header, value = notes.get(CANARY_BY_HEADER, ""), notes.get(CANARY_BY_HEADER_VALUE, "")
                    if not _HEADER_NAME.fullmatch(header or "x") or unservable(value, PREFIX, ""):
                        problems.append(f"{source}: {CANARY_BY_HEADER} {header!r} left out: not a header name "
                                        "(or its value holds a quote)")
                        header, value = "", ""
                    canary = Canary(backend, weight=_weight(notes.get(CANARY_WEIGHT, "0")), header=header,
                                    header_value=value)
                    canaries.append((ing, rule.host, kind, path, canary))
                    continue
                redirect = redirect_all or (rule.host in tls_hosts and _is_true(notes, SSL_REDIRECT, True))
                routes.append(Route(rule.host, path, kind, backend, _nginx_rewrite(rewrite), redirect, limit,
                                    source=source))
        for tls in ing.spec.tls:
            if not tls.secret_name:
                continue
            cert = _certificate(namespace, tls, secrets(namespace, tls.secret_name), problems, source)
            if cert is not None and cert.name not in certificates:
                certificates[cert.name] = cert
    for ing, host, kind, path, canary in canaries:
        # A canary joins the main route with its host and path; one without a main route is ignored.
        for i, route in enumerate(routes):
            if (route.host, route.kind, route.path) == (host, kind, path) and route.canary is None:
                routes[i] = Route(route.host, route.path, route.kind, route.backend, route.rewrite,
                                  route.ssl_redirect, route.body_limit, canary, route.source)
                break
        else:
            problems.append(f"{ing.metadata.namespace}/{ing.metadata.name}: canary for {host or '*'}{path} "
                            "has no main Ingress with that host and path")
    # Each host's catch-all after its own routes: its unknown paths get the default backend.
    for host in {r.host for r in routes if r.host}:
        routes.append(Route(host, "", PREFIX, default, source=CATCH_ALL))
    routes.sort(key=lambda r: _route_order(r, created))
    return Model(tuple(routes), tuple(sorted(backends.values(), key=lambda b: b.name)), default,
                 tuple(certificates.values()), tuple(problems))
