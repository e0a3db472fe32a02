"""The ingress agent's data path: Ingresses → routes → haproxy.cfg, and a real haproxy serving it.

The pure half: routes come in Kubernetes' precedence (precise hosts, then
wildcards, then host-less rules; Exact before Prefix, longer first, a host's
catch-all last), backends resolve Service ports by number or name to the
ready endpoints of the Service's slices, canaries join their main route, and
an endpoints-only change keeps the configuration's shape (no reload needed),
with endpoints keeping their slots.

The real half: a real /usr/sbin/haproxy on loopback ports in front of small
HTTP servers that answer with their own name: hosts and wildcards reach the
right backend, unknown hosts get the 404 default backend, a rewrite-target
with captures rewrites the path, ssl-redirect answers 308, proxy-body-size
refuses big bodies with 413, a TLS host presents its Secret's certificate by
SNI, a weight-20 canary takes about 20% of requests and the canary header
forces it; endpoint changes go through the runtime API with no reload, and a
reload in the middle of a slow request does not cut it.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from client.endpointslices import port_endpoints
from nodeagent.ingress import config, routes
from nodeagent.ingress.haproxy import HAPROXY, Haproxy, self_signed_certificate
from proto import core_pb2, discovery_pb2, networking_pb2
from provision.processes import free_port

NS = "shop"


# ---------------------------------------------------------------- objects


def service(name: str, ports: dict[str, int]) -> core_pb2.Service:
    svc = core_pb2.Service()
    svc.metadata.name, svc.metadata.namespace = name, NS
    svc.spec.cluster_ip = "10.96.0.10"
    for port_name, number in ports.items():
        svc.spec.ports.add(name=port_name, port=number, protocol="TCP")
    return svc


def endpoint_slice(service_name: str, port_name: str, port: int, ips: dict[str, bool]) -> discovery_pb2.EndpointSlice:
    eps = discovery_pb2.EndpointSlice(address_type="IPv4")
    eps.metadata.name, eps.metadata.namespace = f"{service_name}-x", NS
    eps.metadata.labels["kubernetes.io/service-name"] = service_name
    eps.ports.add(name=port_name, port=port, protocol="TCP")
    for ip, ready in ips.items():
        eps.endpoints.add(addresses=[ip]).conditions.ready = ready
    return eps


def ingress(name: str, rules: list[tuple[str, str, str, str, int | str]], *, created: int = 0,
            annotations: dict[str, str] | None = None, tls: list[tuple[list[str], str]] | None = None,
            default: tuple[str, int] | None = None) -> networking_pb2.Ingress:
    ing = networking_pb2.Ingress()
    ing.metadata.name, ing.metadata.namespace = name, NS
    ing.metadata.creation_timestamp.FromSeconds(1_700_000_000 + created)
    ing.metadata.annotations.update(annotations or {})
    for host, path, path_type, svc, port in rules:
        rule = ing.spec.rules.add(host=host)
        p = rule.http.paths.add(path=path, path_type=path_type)
        p.backend.service.name = svc
        if isinstance(port, int):
            p.backend.service.port.number = port
        else:
            p.backend.service.port.name = port
    for hosts, secret in tls or []:
        ing.spec.tls.add(hosts=hosts, secret_name=secret)
    if default:
        ing.spec.default_backend.service.name = default[0]
        ing.spec.default_backend.service.port.number = default[1]
    return ing


def build(ingresses: list[networking_pb2.Ingress], services: list[core_pb2.Service],
          slices: list[discovery_pb2.EndpointSlice], secrets: Sequence[core_pb2.Secret] = ()) -> routes.Model:
    by_name = {s.metadata.name: s for s in services}
    secret_by_name = {s.metadata.name: s for s in secrets}
    return routes.build(
        ingresses, services=lambda ns, name: by_name.get(name),
        slices=lambda ns, name: [s for s in slices if s.metadata.labels["kubernetes.io/service-name"] == name],
        secrets=lambda ns, name: secret_by_name.get(name))


# ---------------------------------------------------------------- pure: routes and rendering


def test_routes_follow_kubernetes_precedence_and_resolve_ports_by_name_or_number() -> None:
    model = build(
        [ingress("late", [("", "/", "Prefix", "web", 80)], created=5),
         ingress("main", [("a.example", "/", "Prefix", "web", 80), ("a.example", "/api/v1", "Prefix", "api", "http"),
                          ("a.example", "/api", "Exact", "api", "http"), ("*.a.example", "/", "Prefix", "web", 80)])],
        [service("web", {"web": 80}), service("api", {"http": 8000})],
        [endpoint_slice("web", "web", 8080, {"10.1.0.2": True, "10.1.0.3": False}),
         endpoint_slice("api", "http", 9000, {"10.1.0.4": True})])
    assert [(r.host, r.kind, r.path, r.backend) for r in model.routes] == [
        ("a.example", "Exact", "/api", "shop_api_http"),
        ("a.example", "Prefix", "/api/v1", "shop_api_http"),
        ("a.example", "Prefix", "", "shop_web_80"),
        ("a.example", "Prefix", "", "default"),  # the host's catch-all
        ("*.a.example", "Prefix", "", "shop_web_80"),
        ("*.a.example", "Prefix", "", "default"),
        ("", "Prefix", "", "shop_web_80")]
    backends = {b.name: b.endpoints for b in model.backends}
    assert backends == {"shop_web_80": (routes.Endpoint("10.1.0.2", 8080),),  # ready ones only
                        "shop_api_http": (routes.Endpoint("10.1.0.4", 9000),)}


def test_slices_join_and_terminating_serving_endpoints_stand_in_when_none_is_ready() -> None:
    first = endpoint_slice("web", "web", 8080, {"10.1.0.2": False})
    first.endpoints[0].conditions.serving = True
    first.endpoints[0].conditions.terminating = True
    second = endpoint_slice("web", "web", 8080, {"10.1.0.2": False})  # the same endpoint mid-move
    found = port_endpoints([first, second], "web")
    assert len(found) == 1 and found[0].terminating
    model = build([ingress("m", [("a.example", "/", "Prefix", "web", 80)])], [service("web", {"web": 80})],
                  [first])
    assert model.backends[0].endpoints == (routes.Endpoint("10.1.0.2", 8080),)


def test_annotations_rewrite_canary_redirect_and_body_size() -> None:
    main = ingress("main", [("b.example", "/api(/|$)(.*)", "ImplementationSpecific", "api", 80)],
                   annotations={routes.REWRITE_TARGET: "/$2", routes.PROXY_BODY_SIZE: "1k"},
                   tls=[(["b.example"], "b-tls")])
    canary = ingress("canary", [("b.example", "/api(/|$)(.*)", "ImplementationSpecific", "api2", 80)], created=1,
                     annotations={routes.CANARY: "true", routes.CANARY_WEIGHT: "20",
                                  routes.CANARY_BY_HEADER: "X-Canary", routes.REWRITE_TARGET: "/$2"})
    model = build([main, canary], [service("api", {"": 80}), service("api2", {"": 80})], [])
    [route, _catch_all] = model.routes
    assert (route.kind, route.rewrite, route.ssl_redirect, route.body_limit) == ("Regex", "/\\2", True, 1024)
    assert route.canary == routes.Canary("shop_api2_80", 20, "X-Canary")
    assert "TLS Secret shop/b-tls not found" in model.problems[0]
    settings = config.Settings(Path("/run/x"), "10.0.0.1")
    text = config.render(model, settings).config
    assert "    http-request replace-path '(?i)/api(/|$)(.*)' '/\\2' if { var(txn.route) -m int 0 }" in text
    assert "    use_backend shop_api2_80 if { var(txn.route) -m int 0 } { rand(100) -m int lt 20 }" in text
    assert "    use_backend shop_api2_80 if { var(txn.route) -m int 0 } { req.hdr(X-Canary) -m str 'always' }" \
           in text
    assert text.count("redirect scheme https code 308") == 1  # the plain frontend only
    assert "deny deny_status 413 if { var(txn.route) -m int 0 } { req.hdr_val(content-length) gt 1024 }" in text


def test_an_endpoints_change_keeps_the_shape_and_the_slots() -> None:
    ing = [ingress("m", [("a.example", "/", "Prefix", "web", 80)])]
    svc = [service("web", {"web": 80})]
    settings = config.Settings(Path("/run/x"))
    before = config.render(build(ing, svc, [endpoint_slice("web", "web", 80, {"10.1.0.2": True,
                                                                              "10.1.0.3": True})]), settings)
    after = config.render(build(ing, svc, [endpoint_slice("web", "web", 80, {"10.1.0.3": True,
                                                                             "10.1.0.9": True})]), settings,
                          before.slots)
    assert before.shape == after.shape and before.config != after.config
    assert before.slots["shop_web_80"][:2] == (("10.1.0.2", 80), ("10.1.0.3", 80))
    assert after.slots["shop_web_80"][:2] == (("10.1.0.9", 80), ("10.1.0.3", 80))  # 10.1.0.3 stays in slot 2
    many = config.render(build(ing, svc, [endpoint_slice("web", "web", 80, {f"10.1.1.{i}": True
                                                                            for i in range(1, 12)})]), settings)
    assert len(many.slots["shop_web_80"]) == 16 and many.shape != before.shape  # more slots: a reload


@pytest.mark.skipif(not shutil.which(HAPROXY), reason=f"{HAPROXY} is not installed")
async def test_an_ingress_haproxy_cannot_carry_is_left_out_and_the_rest_still_loads(tmp_path: Path) -> None:
    good = ingress("good", [("a.example", "/", "Prefix", "web", 80)])
    quoted = ingress("quoted", [("b.example", "/it's", "Prefix", "web", 80)], created=1)
    broken = ingress("broken", [("c.example", "/api(", "ImplementationSpecific", "web", 80)], created=2,
                     annotations={routes.USE_REGEX: "true"})
    header = ingress("header", [("a.example", "/", "Prefix", "web", 80)], created=3,
                     annotations={routes.CANARY: "true", routes.CANARY_BY_HEADER: "X) bad"})
    model = build([good, quoted, broken, header], [service("web", {"": 80})], [])
    assert [r.host for r in model.routes if r.source != routes.CATCH_ALL] == ["a.example"]
    assert len(model.problems) == 3, model.problems
    settings = config.Settings(tmp_path / "ingress", "127.0.0.1", free_port(), free_port())
    proxy = Haproxy(settings)
    proxy.prepare()
    await proxy.check(proxy.write(config.render(model, settings), {}))  # haproxy -c accepts it


# ---------------------------------------------------------------- a real haproxy

needs_haproxy = pytest.mark.skipif(not shutil.which(HAPROXY), reason=f"{HAPROXY} is not installed")


class Backends:
    """Small HTTP servers on 127.0.0.1 that answer `<name> <path>`; /slow waits a second first."""

    def __init__(self) -> None:
        self.runners: list[web.AppRunner] = []

    async def start(self, name: str) -> int:
        async def answer(request: web.Request) -> web.Response:
            if request.path == "/slow":
                await asyncio.sleep(1.5)
            return web.Response(text=f"{name} {request.path_qs}")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.runners.append(runner)
        return port

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    found = Backends()
    try:
        yield found
    finally:
        await found.stop()


def tls_secret(name: str, host: str) -> tuple[core_pb2.Secret, bytes]:
    pem = self_signed_certificate(host)
    cert_end = pem.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----\n")
    secret = core_pb2.Secret(type="kubernetes.io/tls")
    secret.metadata.name, secret.metadata.namespace = name, NS
    secret.data["tls.crt"], secret.data["tls.key"] = pem[:cert_end], pem[cert_end:]
    return secret, pem[:cert_end]


async def served_certificate(port: int, server_name: str) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_name)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der)


@needs_haproxy
async def test_a_real_haproxy_routes_rewrites_splits_and_follows_endpoints(tmp_path: Path,
                                                                            backends: Backends) -> None:
    a, b, b_canary, spare = [await backends.start(n) for n in ("a", "b", "b-canary", "spare")]
    secret, cert_pem = tls_secret("b-tls", "b.example")
    ingresses = [
        ingress("a", [("a.example", "/", "Prefix", "svc-a", 80), ("*.w.example", "/", "Prefix", "svc-a", 80)]),
        ingress("b", [("b.example", "/api(/|$)(.*)", "ImplementationSpecific", "svc-b", 80)], created=1,
                annotations={routes.REWRITE_TARGET: "/$2", routes.PROXY_BODY_SIZE: "1k"},
                tls=[(["b.example"], "b-tls")]),
        ingress("b-canary", [("b.example", "/api(/|$)(.*)", "ImplementationSpecific", "svc-c", 80)], created=2,
                annotations={routes.CANARY: "true", routes.CANARY_WEIGHT: "20",
                             routes.CANARY_BY_HEADER: "X-Canary", routes.REWRITE_TARGET: "/$2"})]
    services = [service("svc-a", {"": 80}), service("svc-b", {"": 80}), service("svc-c", {"": 80})]

    def slices(a_ports: list[int]) -> list[discovery_pb2.EndpointSlice]:
        # Each backend server is 127.0.0.1 on its own port: one slice per port.
        found = [endpoint_slice("svc-b", "", b, {"127.0.0.1": True}),
                 endpoint_slice("svc-c", "", b_canary, {"127.0.0.1": True})]
        found += [endpoint_slice("svc-a", "", port, {"127.0.0.1": True}) for port in a_ports]
        return found

    settings = config.Settings(tmp_path / "ingress", "127.0.0.1", free_port(), free_port())
    proxy = Haproxy(settings)
    model = build(ingresses, services, slices([a]), [secret])
    assert not model.problems
    rendered = config.render(model, settings)
    certificates = {c.name: c.pem for c in model.certificates}
    await proxy.apply(rendered, certificates)
    base = f"http://127.0.0.1:{settings.http_port}"
    try:
        async with aiohttp.ClientSession() as http:
            async def get(path: str, host: str) -> tuple[int, str]:
                async with http.get(base + path, headers={"Host": host}, allow_redirects=False) as resp:
                    return resp.status, await resp.text()

            assert await get("/x?q=1", "a.example") == (200, "a /x?q=1")
            assert await get("/", "one.w.example") == (200, "a /")
            assert (await get("/", "two.one.w.example"))[0] == 404  # a wildcard is one label
            assert await get("/", "unknown.example") == (404, "default backend - 404")
            # TLS for b.example: plain HTTP is redirected; over HTTPS the rewrite applies.
            status, _ = await get("/api/items", "b.example")
            assert status == 308
            https = f"https://127.0.0.1:{settings.https_port}"
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            cert = await served_certificate(settings.https_port, "b.example")
            assert cert == x509.load_pem_x509_certificate(cert_pem)
            other = await served_certificate(settings.https_port, "a.example")
            assert other != cert  # the default certificate for names without one
            picks = {"b": 0, "b-canary": 0}
            for _ in range(200):
                async with http.get(https + "/api/items", headers={"Host": "b.example"}, ssl=context) as resp:
                    name, path = (await resp.text()).split()
                    assert (resp.status, path) == (200, "/items")
                    picks[name] += 1
            assert 20 <= picks["b-canary"] <= 60, picks  # 20% ± 10 of 200
            async with http.get(https + "/api", headers={"Host": "b.example", "X-Canary": "always"},
                                ssl=context) as resp:
                assert (await resp.text()) == "b-canary /"
            async with http.post(https + "/api/up", headers={"Host": "b.example"}, data=b"x" * 4096,
                                 ssl=context) as resp:
                assert resp.status == 413

            # Endpoints change: slots through the runtime API, no reload.
            again = config.render(build(ingresses, services, slices([spare]), [secret]), settings, rendered.slots)
            assert again.shape == rendered.shape
            assert await proxy.set_slots(rendered.slots, again.slots) == 1  # a's slot now holds spare
            seen = {(await get("/", "a.example"))[1] for _ in range(5)}
            assert seen == {"spare /"}

            # A reload during a slow request: the request still completes.
            slow = asyncio.ensure_future(get("/slow", "a.example"))
            await asyncio.sleep(0.3)
            more = [*ingresses, ingress("c", [("c.example", "/", "Prefix", "svc-a", 80)], created=3)]
            bigger = config.render(build(more, services, slices([spare]), [secret]), settings, again.slots)
            assert bigger.shape != again.shape
            await proxy.apply(bigger, certificates)
            assert await slow == (200, "spare /slow")
            for _ in range(50):  # the new workers take over
                status, text = await get("/", "c.example")
                if status == 200:
                    break
                await asyncio.sleep(0.1)
            assert (status, text) == (200, "spare /")
    finally:
        await proxy.stop()
    assert not proxy.running
    assert not settings.state_dir.exists()  # certificates and keys go with it
