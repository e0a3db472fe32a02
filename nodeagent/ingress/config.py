"""haproxy's configuration for a Model (pure): the text of haproxy.cfg and of its crt-list.

Two frontends, plain HTTP on the node's address port 80 and TLS on 443 (SNI
picks the certificate from the crt-list; a self-signed default answers other
names), route alike. A request is matched once, before anything changes it:
`http-request set-var(txn.route)` rules, in the Model's route order, record the
first route whose host and path ACLs match; every later step keys on that
number, so a rewritten path never changes the route. Then, per route: the
redirect to HTTPS (plain frontend only), the body-size refusal (413, read from
Content-Length), the path rewrite (`replace-path`, which replaces the whole
path as nginx's `rewrite` does) and the backend choice, with the canary's
header and weighted `rand(100)` picks first. Requests that match no route go
to the default backend (a 404 unless an Ingress names one).

Each backend has a fixed number of server **slots** (a power of two, at least
`MIN_SLOTS`): endpoints fill the first ones, the rest are `disabled`
placeholders. The slots are what lets endpoint changes skip reloads: `shape`
is the configuration with every slot a placeholder, so two Models with the same
shape differ only in slot contents, which the agent sets through haproxy's
runtime API (`servers` says what each slot holds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from nodeagent.ingress.routes import DEFAULT_BACKEND, EXACT, PREFIX, Backend, Model, Route

MIN_SLOTS = 8
PLACEHOLDER = "127.0.0.1:1"  # an empty slot's address: never used, as the slot is disabled
SERVER_PREFIX = "s"  # slots are servers s1, s2, ...

Slots = dict[str, tuple[tuple[str, int] | None, ...]]  # backend -> each slot's (ip, port) or None


@dataclass(frozen=True)
class Settings:
    """Where this node's haproxy listens and keeps its files."""

    state_dir: Path  # haproxy.cfg, crt-list, certificates, the sockets
    bind_address: str = "*"  # the node's address ("*": every address of its namespace)
    http_port: int = 80
    https_port: int = 443

    @property
    def admin_socket(self) -> Path:
        return self.state_dir / "admin.sock"

    @property
    def crt_list(self) -> Path:
        return self.state_dir / "crt-list.txt"

    @property
    def default_certificate(self) -> Path:
        return self.state_dir / "default.pem"

    def certificate(self, name: str) -> Path:
        return self.state_dir / "certs" / f"{name}.pem"


@dataclass(frozen=True)
class Rendered:
    config: str  # haproxy.cfg with the endpoints in their slots
    shape: str  # the same with every slot a placeholder: equal shapes need no reload
    crt_list: str
    slots: Slots


def slot_count(endpoints: int) -> int:
    count = MIN_SLOTS
    while count < endpoints:
        count *= 2
    return count


def _quoted(text: str) -> str:
    """An argument in haproxy's strong (single) quotes, where nothing is escaped; no quote may be inside."""
    if "'" in text:
        raise ValueError(f"{text!r} holds a single quote, which haproxy's configuration cannot carry here")
    return f"'{text}'"


def _host_acl(host: str) -> str:
    if host.startswith("*."):
        # A wildcard matches exactly one label more (Kubernetes' rule), so `[^.]+`.
        return "var(txn.host) -m reg " + _quoted("^[^.]+" + re.escape(host[1:]) + "$")
    return f"var(txn.host) -m str {host}"


def _path_acls(route: Route) -> list[str]:
    """The criteria, any of which matches the route's path ([] matches every path)."""
    if route.kind == EXACT:
        return [f"path -m str {_quoted(route.path)}"]
    if route.kind == PREFIX:
        if not route.path:
            return []
        return [f"path -m str {_quoted(route.path)}", f"path -m beg {_quoted(route.path + '/')}"]
    return [f"path -i -m reg {_quoted('^' + route.path)}"]  # ingress-nginx's `location ~* "^path"`


def _routing(model: Model, *, plain: bool) -> list[str]:
    """The lines of a frontend from the route choice to the backend choice."""
    lines = ["    http-request set-var(txn.host) req.hdr(host),field(1,:),lower"]
    hosts: dict[str, str] = {}
    for i, route in enumerate(model.routes):
        conditions = ["!{ var(txn.route) -m found }"]
        if route.host:
            if route.host not in hosts:
                hosts[route.host] = f"host{len(hosts)}"
                lines.append(f"    acl {hosts[route.host]} {_host_acl(route.host)}")
            conditions.append(hosts[route.host])
        acls = _path_acls(route)
        if acls:
            lines += [f"    acl path{i} {acl}" for acl in acls]
            conditions.append(f"path{i}")
        lines.append(f"    http-request set-var(txn.route) int({i}) if {' '.join(conditions)}")
    for i, route in enumerate(model.routes):
        chosen = f"{{ var(txn.route) -m int {i} }}"
        if plain and route.ssl_redirect:
            lines.append(f"    http-request redirect scheme https code 308 if {chosen}")
        if route.body_limit >= 0:
            lines.append(f"    http-request deny deny_status 413 if {chosen} "
                         f"{{ req.hdr_val(content-length) gt {route.body_limit} }}")
        if route.rewrite:
            target = route.rewrite.replace("%", "%%")
            lines.append(f"    http-request replace-path {_quoted('(?i)' + route.path)} {_quoted(target)} "
                         f"if {chosen}")
    for i, route in enumerate(model.routes):
        chosen = f"{{ var(txn.route) -m int {i} }}"
        canary = route.canary
        if canary is not None:
            if canary.header:
                value = canary.header_value or "always"
                lines.append(f"    use_backend {canary.backend} if {chosen} "
                             f"{{ req.hdr({canary.header}) -m str {_quoted(value)} }}")
                lines.append(f"    use_backend {route.backend} if {chosen} "
                             f"{{ req.hdr({canary.header}) -m str never }}")
            if canary.weight:
                lines.append(f"    use_backend {canary.backend} if {chosen} {{ rand(100) -m int lt {canary.weight} }}")
        lines.append(f"    use_backend {route.backend} if {chosen}")
    lines.append(f"    default_backend {model.default_backend}")
    return lines


def _backend(backend: Backend, slots: tuple[tuple[str, int] | None, ...], *, placeholders: bool) -> list[str]:
    lines = [f"backend {backend.name}", "    balance roundrobin"]
    for n, slot in enumerate(slots, start=1):
        if slot is None or placeholders:
            lines.append(f"    server {SERVER_PREFIX}{n} {PLACEHOLDER} disabled")
        else:
            lines.append(f"    server {SERVER_PREFIX}{n} {slot[0]}:{slot[1]}")
    return lines


def _global(settings: Settings) -> list[str]:
    return [
        "global",
        f"    stats socket {settings.admin_socket} mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        # Old workers finish their connections after a reload, for at most this long.
        "    hard-stop-after 5m",
        "    maxconn 4096",
        "    ssl-default-bind-options ssl-min-ver TLSv1.2",
        "",
        "defaults",
        "    mode http",
        "    option forwardfor",
        # A connection refused by a pod that just went away is retried on another endpoint.
        "    option redispatch",
        "    retries 3",
        "    retry-on conn-failure empty-response",
        # Idle connections to pods serve any client's next request, as ingress-nginx's upstream
        # keepalive does (haproxy's default, `safe`, never gives a client's first request one).
        "    http-reuse always",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 60s",
        "",
    ]


def render(model: Model, settings: Settings, previous: Slots | None = None) -> Rendered:
    """haproxy.cfg and crt-list for `model`; `previous` keeps endpoints in the slots they had."""
    slots = assign_slots(model, previous or {})
    https = (f"    bind {settings.bind_address}:{settings.https_port} ssl crt {settings.default_certificate} "
             f"crt-list {settings.crt_list}")

    def text(placeholders: bool) -> str:
        lines = _global(settings)
        lines += ["frontend http", f"    bind {settings.bind_address}:{settings.http_port}",
                  *_routing(model, plain=True), ""]
        lines += ["frontend https", https, "    http-request set-header X-Forwarded-Proto https",
                  *_routing(model, plain=False), ""]
        for backend in model.backends:
            lines += [*_backend(backend, slots[backend.name], placeholders=placeholders), ""]
        lines += [f"backend {DEFAULT_BACKEND}",
                  '    http-request return status 404 content-type text/plain string "default backend - 404"', ""]
        return "\n".join(lines)

    crt_list = "".join(
        f"{settings.certificate(cert.name)}" + "".join(f" {host}" for host in cert.hosts) + "\n"
        for cert in model.certificates)
    return Rendered(text(False), text(True), crt_list, slots)


def assign_slots(model: Model, previous: Slots) -> Slots:
    """Each backend's slots: endpoints that had a slot keep it, new ones take the free ones in order."""
    out: Slots = {}
    for backend in model.backends:
        wanted = [(e.ip, e.port) for e in backend.endpoints]
        count = slot_count(len(wanted))
        before = list(previous.get(backend.name, ()))
        if len(before) != count:
            before = []  # a new size means a new configuration: fill from the start
        kept: list[tuple[str, int] | None] = [slot if slot in wanted else None for slot in before] or [None] * count
        placed = {slot for slot in kept if slot is not None}
        free = iter(i for i, slot in enumerate(kept) if slot is None)
        for endpoint in wanted:
            if endpoint not in placed:
                kept[next(free)] = endpoint
        out[backend.name] = tuple(kept)
    return out
