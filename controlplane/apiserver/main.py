"""`flotilla-apiserver`: the only component that talks to etcd.

    flotilla-apiserver --etcd-servers http://127.0.0.1:2379 --listen 127.0.0.1:6443
    flotilla-apiserver --etcd-servers ... --secure-listen 0.0.0.0:6443 --token-listen 0.0.0.0:6444 \
        --tls-cert-file apiserver.crt --tls-private-key-file apiserver.key \
        --client-ca-file ca.crt --token-auth-file tokens.csv --authorization-mode RBAC

Ports: `--listen` is plaintext and loopback only (the caller counts as the local
admin); `--secure-listen` is TLS that requires a client certificate signed by
the client CA (CN = user, O = groups); `--token-listen` is TLS with bearer
tokens. `--https-listen` serves the Kubernetes HTTP API (kubectl, client
libraries) over TLS with an optional client certificate, else a bearer token;
`--http-listen` serves it in plaintext on loopback, to the local admin. gRPC and
HTTP run on one asyncio loop over the same request core (endpoints.py).

Connects to etcd, makes sure the system namespaces (and with RBAC the
default roles) exist, starts the history compactor and the caches, then serves
the gRPC API until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
from pathlib import Path

import grpc
from aiohttp import web

from client.api import SERVER_OPTIONS
from client.component import Command, until_stopped
from controlplane.apiserver import cacher, encryption, kubernetesservice, storagemigration
from controlplane.apiserver.audit import AuditLog
from controlplane.apiserver.auth import (
    AlwaysAllow,
    Authenticator,
    Authorizer,
    BootstrapTokens,
    ByTransport,
    LoopbackAuthenticator,
    RequestAuthenticator,
    TokenFile,
)
from controlplane.apiserver.crd.controller import serve_definitions
from controlplane.apiserver.decoding import RejectUndecodableRequests
from controlplane.apiserver.endpoints import Endpoints
from controlplane.apiserver.http.app import make_app, server_ssl_context
from controlplane.apiserver.http.site import LimitedSite
from controlplane.apiserver.proxy import KubeletClientTLS
from controlplane.apiserver.rbac import RBACAuthorizer, ensure_default_policy, feed_from_registry
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.server import ApiService
from controlplane.apiserver.serviceaccount import options as serviceaccount_options
from controlplane.apiserver.storage import EtcdClientTLS, Storage, compact_forever
from controlplane.connlimits import GRPC_SERVER_OPTIONS, KEEPALIVE_TIMEOUT
from proto import apiserver_pb2_grpc, kinds

log = logging.getLogger("flotilla.apiserver")
MAX_HEADER_BYTES = 1 << 20  # the longest request line or header the HTTP API reads


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--etcd-servers", default="http://127.0.0.1:2379",
                        help="etcd client URLs, comma-separated (several members: IP addresses; calls go to the "
                             "first that answers, then the next when it is lost); https needs --etcd-cafile, "
                             "--etcd-certfile and --etcd-keyfile")
    parser.add_argument("--etcd-cafile", default="", help="CA of etcd's serving certificate (PEM)")
    parser.add_argument("--etcd-certfile", default="", help="client certificate (PEM) etcd accepts")
    parser.add_argument("--etcd-keyfile", default="", help="its key (PEM)")
    parser.add_argument("--encryption-provider-config", default="",
                        help="EncryptionConfiguration file: which resources are encrypted in etcd, with which keys")
    parser.add_argument("--listen", default="", help="plaintext HOST:PORT, loopback only (no credentials needed)")
    parser.add_argument("--secure-listen", default="", help="TLS HOST:PORT requiring client certificates")
    parser.add_argument("--token-listen", default="", help="TLS HOST:PORT taking bearer tokens")
    parser.add_argument("--https-listen", default="",
                        help="Kubernetes HTTP API over TLS on HOST:PORT (client certificate optional, else a bearer "
                             "token): what kubectl and client libraries use")
    parser.add_argument("--http-listen", default="",
                        help="Kubernetes HTTP API in plaintext on HOST:PORT, loopback only (the caller is the "
                             "local admin)")
    parser.add_argument("--tls-cert-file", default="", help="serving certificate (PEM)")
    parser.add_argument("--tls-private-key-file", default="", help="serving key (PEM)")
    parser.add_argument("--client-ca-file", default="", help="CA that signs client certificates (PEM)")
    parser.add_argument("--token-auth-file", default="", help='static tokens: token,user,uid,"group1,group2"')
    parser.add_argument("--enable-bootstrap-token-auth", action="store_true",
                        help="accept bootstrap tokens (kube-system Secrets of type bootstrap.kubernetes.io/token) "
                             "on the token port, for joining nodes")
    parser.add_argument("--kubelet-client-certificate", default="",
                        help="client certificate (PEM) for dialing kubelets over TLS (logs, exec)")
    parser.add_argument("--kubelet-client-key", default="", help="its key (PEM)")
    parser.add_argument("--kubelet-certificate-authority", default="",
                        help="CA of the kubelets' serving certificates (PEM)")
    parser.add_argument("--authorization-mode", default="", choices=["", "AlwaysAllow", "RBAC"],
                        help="default: RBAC when a TLS port is served, else AlwaysAllow")
    parser.add_argument("--compaction-interval", type=float, default=300.0,
                        help="seconds of etcd history to keep; 0 disables compaction")
    parser.add_argument("--bookmark-interval", type=float, default=30.0,
                        help="seconds of quiet before a watch gets a BOOKMARK")
    parser.add_argument("--watch-cache", default=True, type=_boolean,
                        help="serve lists and watches from the watch cache (one etcd watch per resource); "
                             "false: from etcd, one etcd watch per client watch")
    parser.add_argument("--watch-cache-size", type=int, default=cacher.DEFAULT_CAPACITY,
                        help="changes kept per resource: a watch resuming from further back is told 410 Gone")
    parser.add_argument("--audit-log-path", default="", help="one JSON line per write and per read of a Secret (0600)")
    parser.add_argument("--audit-log-maxsize", type=int, default=100, help="MiB before the audit log rotates")
    parser.add_argument("--audit-log-maxbackup", type=int, default=5, help="rotated audit files to keep")
    parser.add_argument("--disable-admission-plugins", default="", type=_names,
                        help="comma-separated admission plugins to turn off (e.g. PodSecurity)")
    serviceaccount_options.add_flags(parser)
    kubernetesservice.add_flags(parser)
    parser.add_argument("--reserved-host-ports", default=None, type=_ports,
                        help="comma-separated host ports no pod may use (default: Flotilla's own ports: etcd, "
                             "the apiserver's, the kubelet's, the image registry's)")


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _boolean(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"must be true or false, not {value!r}")
    return value.lower() == "true"


def _ports(value: str) -> list[int]:
    ports = []
    for item in _names(value):
        try:
            port = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a port number: {item!r}") from None
        if not 0 < port < 65536:
            raise argparse.ArgumentTypeError(f"not a port number: {port}")
        ports.append(port)
    return ports


def configure_admission(registry: Registry, opts: argparse.Namespace) -> None:
    """The admission chain as the flags want it; an unknown plugin name stops the start."""
    try:
        registry.admission.disable(opts.disable_admission_plugins)
    except ValueError as exc:
        raise SystemExit(f"flotilla-apiserver: --disable-admission-plugins: {exc}") from None
    if opts.reserved_host_ports is not None:
        registry.admission.set_reserved_host_ports(opts.reserved_host_ports)


# The apiserver serves rather than calls: no --server or --kubeconfig, and no client from the runner.
# OSError: a certificate, key or token file cannot be read.
COMMAND = Command("flotilla-apiserver", __doc__, flags=add_flags, connects=False, errors=(OSError,))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return COMMAND.parse_args(argv)


def require_loopback(listen: str) -> None:
    """Without TLS and authentication, nothing but this host may reach the API."""
    host = listen.rpartition(":")[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"flotilla-apiserver: refusing to listen on {listen} without TLS: "
                         "use a loopback address (127.0.0.1:PORT)")


def check_options(opts: argparse.Namespace) -> None:
    """Refuse configurations that would expose the API without protection."""
    if not (opts.listen or opts.secure_listen or opts.token_listen or opts.https_listen or opts.http_listen):
        opts.listen = "127.0.0.1:6443"
    if opts.watch_cache and opts.watch_cache_size < 1:
        raise SystemExit("flotilla-apiserver: --watch-cache-size must be at least 1 (or --watch-cache=false)")
    for plaintext in (opts.listen, opts.http_listen):
        if plaintext:
            require_loopback(plaintext)
    secure = bool(opts.secure_listen or opts.token_listen or opts.https_listen)
    if secure and not (opts.tls_cert_file and opts.tls_private_key_file):
        raise SystemExit("flotilla-apiserver: TLS ports need --tls-cert-file and --tls-private-key-file")
    if opts.secure_listen and not opts.client_ca_file:
        raise SystemExit("flotilla-apiserver: --secure-listen needs --client-ca-file")
    if opts.https_listen and not (opts.client_ca_file or opts.token_auth_file or opts.enable_bootstrap_token_auth):
        raise SystemExit("flotilla-apiserver: --https-listen needs --client-ca-file or a token source "
                         "(--token-auth-file, --enable-bootstrap-token-auth)")
    if opts.token_listen and not (opts.token_auth_file or opts.enable_bootstrap_token_auth):
        raise SystemExit("flotilla-apiserver: --token-listen needs --token-auth-file or "
                         "--enable-bootstrap-token-auth")
    kubelet_tls = [opts.kubelet_client_certificate, opts.kubelet_client_key, opts.kubelet_certificate_authority]
    if any(kubelet_tls) and not all(kubelet_tls):
        raise SystemExit("flotilla-apiserver: TLS to kubelets needs --kubelet-client-certificate, "
                         "--kubelet-client-key and --kubelet-certificate-authority together")
    if not opts.authorization_mode:
        opts.authorization_mode = "RBAC" if secure else "AlwaysAllow"


def add_ports(server: grpc.aio.Server, opts: argparse.Namespace) -> None:
    pairs: list[tuple[bytes, bytes]] = []
    if opts.secure_listen or opts.token_listen:
        pairs = [(Path(opts.tls_private_key_file).read_bytes(), Path(opts.tls_cert_file).read_bytes())]
    ports = []
    if opts.listen:
        ports.append((opts.listen, server.add_insecure_port(opts.listen)))
    if opts.secure_listen:
        mtls = grpc.ssl_server_credentials(pairs, root_certificates=Path(opts.client_ca_file).read_bytes(),
                                           require_client_auth=True)
        ports.append((opts.secure_listen, server.add_secure_port(opts.secure_listen, mtls)))
    if opts.token_listen:
        ports.append((opts.token_listen, server.add_secure_port(opts.token_listen, grpc.ssl_server_credentials(pairs))))
    for address, bound in ports:
        if bound == 0:
            raise SystemExit(f"flotilla-apiserver: cannot listen on {address}")


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


async def start_http(endpoints: Endpoints, authenticator: Authenticator, opts: argparse.Namespace
                     ) -> list[web.AppRunner]:
    """The Kubernetes HTTP API listeners, on this loop beside gRPC (one runner per listener)."""
    runners = []
    listeners: list[tuple[str, bool]] = [(opts.https_listen, True), (opts.http_listen, False)]
    for listen, secure in listeners:
        if not listen:
            continue
        # Request lines and headers up to Go's http.DefaultMaxHeaderBytes, as kube-apiserver takes them: long
        # label and field selectors are a query string (aiohttp would refuse past 8 KiB, in plain text).
        runner = web.AppRunner(make_app(endpoints, authenticator, secure=secure), access_log=None,
                               keepalive_timeout=KEEPALIVE_TIMEOUT,
                               handle_signals=False, max_line_size=MAX_HEADER_BYTES, max_field_size=MAX_HEADER_BYTES)
        await runner.setup()
        tls = server_ssl_context(opts.tls_cert_file, opts.tls_private_key_file, opts.client_ca_file) if secure else None
        host, port = _host_port(listen)
        try:
            # A per-source cap, a deadline for the first request and one for the TLS handshake (connlimits.py).
            await LimitedSite(runner, host, port, ssl_context=tls, shutdown_timeout=2).start()
        except OSError as exc:
            raise SystemExit(f"flotilla-apiserver: cannot listen on {listen}: {exc}") from None
        runners.append(runner)
    return runners


def kubelet_client_tls(opts: argparse.Namespace) -> KubeletClientTLS | None:
    """What the apiserver dials kubelets with (None: plaintext, for kubelets without a PKI)."""
    if not opts.kubelet_client_certificate:
        return None
    return KubeletClientTLS(Path(opts.kubelet_client_certificate).read_bytes(),
                            Path(opts.kubelet_client_key).read_bytes(),
                            Path(opts.kubelet_certificate_authority).read_bytes())


def open_storage(opts: argparse.Namespace) -> Storage:
    """etcd as the flags describe it: TLS with a client certificate, encryption at rest; a mistake stops the
    start with one line."""
    etcd_tls = [opts.etcd_cafile, opts.etcd_certfile, opts.etcd_keyfile]
    if any(etcd_tls) and not all(etcd_tls):
        raise SystemExit("flotilla-apiserver: TLS to etcd needs --etcd-cafile, --etcd-certfile and "
                         "--etcd-keyfile together")
    try:
        tls = EtcdClientTLS.from_files(*etcd_tls) if all(etcd_tls) else None
        config = (encryption.load_config(Path(opts.encryption_provider_config))
                  if opts.encryption_provider_config else None)
        return Storage(opts.etcd_servers, tls=tls, encryption=config)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"flotilla-apiserver: {exc}") from None


async def serve(opts: argparse.Namespace) -> None:
    storage = open_storage(opts)
    registry = Registry(storage, watch_cache_size=opts.watch_cache_size if opts.watch_cache else 0)
    configure_admission(registry, opts)  # a mistyped plugin name stops the start before anything is touched
    await storage.connect()
    # Objects stored by an older Flotilla (before Kubernetes' field numbers) are rewritten once, before
    # anything reads them; every start checks, since only the marker tells the formats apart.
    migrated = await storagemigration.migrate(storage)
    if migrated:
        log.info("storage: %d objects rewritten in Kubernetes' field numbering", migrated)
    # Encryption at rest: what an older key (or no key) sealed is sealed again with the writing key.
    resealed, unreadable = await storage.rewrite_stale()
    if resealed or unreadable:
        log.info("encryption at rest: %d values sealed again with the current key, %d unreadable", resealed,
                 unreadable)
    await registry.ensure_system_namespaces()
    tokens = TokenFile(Path(opts.token_auth_file)) if opts.token_auth_file else None
    background: list[asyncio.Task[None]] = []
    bootstrap_tokens = None
    if opts.enable_bootstrap_token_auth:
        bootstrap_tokens = BootstrapTokens()
        synced = asyncio.Event()
        background.append(asyncio.create_task(registry.mirror(
            kinds.resolve("secrets"), bootstrap_tokens.observe, bootstrap_tokens.forget, synced)))
        await asyncio.wait_for(synced.wait(), 30)
    service_account_tokens = await serviceaccount_options.start(registry, opts, background)
    authenticator = ByTransport(RequestAuthenticator(tokens, bootstrap_tokens, service_account_tokens),
                                LoopbackAuthenticator() if opts.listen or opts.http_listen else None)
    authorizer: Authorizer = AlwaysAllow()
    if opts.authorization_mode == "RBAC":
        await ensure_default_policy(registry)
        rbac = RBACAuthorizer()
        background.append(asyncio.create_task(feed_from_registry(rbac, registry)))
        await asyncio.wait_for(rbac.synced.wait(), 30)
        authorizer = rbac
    audit = None
    if opts.audit_log_path:
        audit = AuditLog(Path(opts.audit_log_path), max_bytes=opts.audit_log_maxsize * 1024 * 1024,
                         backups=opts.audit_log_maxbackup)
    kubelet_tls = kubelet_client_tls(opts)
    endpoints = Endpoints(registry, authorizer=authorizer, audit=audit, kubelet_tls=kubelet_tls,
                          bookmark_interval=opts.bookmark_interval)
    endpoints.token_issuer = service_account_tokens.issuer
    endpoints.service_account_tokens = service_account_tokens
    endpoints.max_token_seconds = opts.service_account_max_token_expiration
    # GRPC_SERVER_OPTIONS: deadlines for the TLS handshake and for idle or silent connections.
    server = grpc.aio.server(options=[*SERVER_OPTIONS, *GRPC_SERVER_OPTIONS],
                             interceptors=[RejectUndecodableRequests()])
    apiserver_pb2_grpc.add_ApiServerServicer_to_server(ApiService(endpoints, authenticator=authenticator), server)
    add_ports(server, opts)
    await server.start()
    http_runners = await start_http(endpoints, authenticator, opts)
    background.append(asyncio.create_task(registry.watch_namespaces()))
    background.append(asyncio.create_task(serve_definitions(registry)))  # CRDs: names, Established, cleanup
    background.append(asyncio.create_task(registry.watch_admission_policy()))
    kubernetes_service = kubernetesservice.from_options(registry, opts)  # default/kubernetes -> live apiservers
    if kubernetes_service is not None:
        background.append(asyncio.create_task(kubernetes_service.run()))
    if opts.compaction_interval > 0:
        background.append(asyncio.create_task(compact_forever(storage, opts.compaction_interval)))
    # What start-up built (descriptors, the kinds table, OpenAPI, caches' scaffolding) lives as long as the
    # process: out of the collector's generations, each full collection stops walking it — measured 18-43 ms
    # pauses every 2-3 s before, 3-6 ms after, most of an update's 50 ms p99 budget (bench/README.md).
    gc.freeze()
    log.info("serving on %s, etcd %s, authorization %s",
             ", ".join(p for p in (opts.listen, opts.secure_listen, opts.token_listen, opts.https_listen,
                                   opts.http_listen) if p), storage.url, opts.authorization_mode)
    try:
        await until_stopped()
    finally:
        # In-flight calls get two seconds to finish; watches are cut (their clients re-list).
        await server.stop(grace=2)
        for runner in http_runners:
            await runner.cleanup()
        if kubernetes_service is not None:
            await kubernetes_service.withdraw()  # out of the kubernetes Service's endpoints at once
        for task in background:
            task.cancel()
        if registry.cacher is not None:
            await registry.cacher.stop()
        await storage.close()


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    check_options(opts)
    COMMAND.run_standalone(serve, opts)


if __name__ == "__main__":
    main()
