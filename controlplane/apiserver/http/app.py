"""The HTTP API's aiohttp application: routes, authentication and errors, beside the gRPC service.

kubectl, the `kubernetes` Python client and kopf speak Kubernetes' HTTP API;
this application serves it on the apiserver's own asyncio loop, over the same
request core as gRPC (controlplane/apiserver/endpoints.py). A request passes

1. the error middleware: any `ApiError` (and aiohttp's own refusals, such as a
   body over the size limit) becomes a meta/v1 Status with its HTTP code
   (status.py), so no handler builds an error by hand; and admission's warnings
   for the request become `Warning: 299 - "..."` headers, on errors too (kubectl
   prints each as `Warning: ...`);
2. the authentication middleware: on the TLS listener a client certificate the
   TLS layer verified against the client CA (CN = user, O = groups), else a
   bearer token, else 401; on the loopback plaintext listener the caller is
   the local admin, as on gRPC's `--listen`. Health and version are public;
3. the route: discovery (`/api`, `/apis`, G's discovery.py), OpenAPI (C's
   openapi package), `/version`, health, and every resource path, parsed into
   a RequestInfo (requestinfo.py) and served by handlers.py.

Authorisation, admission and audit happen in the request core, per request.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from controlplane.apiserver import openapi
from controlplane.apiserver.admission import warning_header
from controlplane.apiserver.auth import Authenticator, Credentials, UserInfo, identity_of_der, parse_bearer
from controlplane.apiserver.crd.handlers import CustomResourceHandlers
from controlplane.apiserver.crd.served import CustomKind
from controlplane.apiserver.endpoints import Endpoints, collect_warnings
from controlplane.apiserver.http import codec, discovery, requestinfo
from controlplane.apiserver.http.handlers import ResourceHandlers, json_response
from controlplane.apiserver.http.status import status_response
from proto.errors import ApiError, NotFound, TooLarge, Unauthorized

log = logging.getLogger(__name__)

USER = "flotilla.user"  # the authenticated UserInfo, on each request
_PUBLIC = frozenset({"/healthz", "/livez", "/readyz", "/version", "/version/"})
_NOT_FOUND = "the server could not find the requested resource"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _http_error(exc: web.HTTPException) -> ApiError:
    if exc.status == 413:
        return TooLarge(f"Request entity too large: limit is {codec.MAX_BODY_BYTES} bytes")
    if exc.status == 404:
        return NotFound(_NOT_FOUND)
    err = ApiError(exc.reason or exc.text or "error")
    err.reason = {400: "BadRequest", 405: "MethodNotAllowed"}.get(exc.status, "InternalError")
    return err


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    with collect_warnings() as warnings:
        try:
            response = await handler(request)
        except ApiError as err:
            response = status_response(err)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = status_response(_http_error(exc))
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            response = status_response(ApiError("Internal error occurred: the apiserver failed to serve the "
                                                "request"))
    if warnings and not response.prepared:  # a stream already sent its headers; watches have no admission
        for text in warnings:
            response.headers.add("Warning", warning_header(text))
    return response


def credentials(request: web.Request, secure: bool) -> Credentials:
    """What the request presented: the verified client certificate (TLS) and the bearer token."""
    certificate = None
    if secure and request.transport is not None:
        tls = request.transport.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if isinstance(tls, ssl.SSLObject) else None
        if der:
            certificate = identity_of_der(der)
    return Credentials(secure, certificate, parse_bearer(request.headers.get("Authorization")))


def authentication(authenticator: Authenticator, secure: bool) -> Any:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            request[USER] = authenticator.authenticate(credentials(request, secure))
        except Unauthorized as err:
            if request.path not in _PUBLIC:
                return status_response(Unauthorized("Unauthorized"), headers={"WWW-Authenticate": "Bearer"})
            log.debug("anonymous %s: %s", request.path, err)
        return await handler(request)
    return authenticate


class Routes:
    def __init__(self, endpoints: Endpoints, authenticator: Authenticator) -> None:
        self.endpoints = endpoints
        self.resources = ResourceHandlers(endpoints, authenticator)
        self.custom_resources = CustomResourceHandlers(endpoints)

    async def root(self, request: web.Request) -> web.Response:
        """`GET /`: every path served (kube-apiserver's RootPaths; `kubectl get --raw /`)."""
        return json_response({"paths": _root_paths()})

    async def version(self, request: web.Request) -> web.Response:
        return json_response(await self.endpoints.version())

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok", content_type="text/plain")

    async def api(self, request: web.Request) -> web.Response:
        return _discovery_root(request, legacy=True)

    async def apis(self, request: web.Request) -> web.Response:
        return _discovery_root(request, legacy=False)

    async def openapi_v2(self, request: web.Request) -> web.Response:
        return web.Response(body=openapi.v2_document_bytes(), content_type=codec.JSON)

    async def openapi_v3(self, request: web.Request) -> web.Response:
        path = request.match_info.get("path", "")
        if not path.strip("/"):
            return json_response(openapi.v3_index())
        body = openapi.v3_document_bytes(path)
        if body is None:
            raise NotFound(_NOT_FOUND)
        headers = {"ETag": f'"{openapi.v3_hash(path)}"', "Cache-Control": "public, immutable"}
        return web.Response(body=body, content_type=codec.JSON, headers=headers)

    async def resource(self, request: web.Request) -> web.StreamResponse:
        info = requestinfo.parse(request.method, request.path, request.query)
        if not info.is_resource_request:
            return _group_discovery(request.path)
        kind = discovery.resolve(info.api_group, info.api_version, info.resource)
        if kind is None:
            raise NotFound(_NOT_FOUND)
        user = request.get(USER)
        if not isinstance(user, UserInfo):
            raise Unauthorized("Unauthorized")
        if isinstance(kind, CustomKind):  # a CRD's kind: its objects are JSON under a schema
            return await self.custom_resources.serve(request, user, info, kind)
        return await self.resources.serve(request, user, info, kind)


def _root_paths() -> list[str]:
    paths = {"/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/openapi/v2", "/openapi/v3",
             "/version"}
    for group in discovery.api_group_list()["groups"]:
        paths.add(f"/apis/{group['name']}")
        paths.update(f"/apis/{v['groupVersion']}" for v in group["versions"])
    return sorted(paths)


def _discovery_root(request: web.Request, *, legacy: bool) -> web.Response:
    accept = request.headers.get("Accept", "")
    if codec.accepts(accept, codec.JSON, g="apidiscovery.k8s.io", v="v2", **{"as": "APIGroupDiscoveryList"}):
        return web.Response(body=codec.dumps(discovery.aggregated(legacy)),
                            headers={"Content-Type": discovery.AGGREGATED_CONTENT_TYPE})
    return json_response(discovery.api_versions() if legacy else discovery.api_group_list())


def _group_discovery(path: str) -> web.Response:
    """`/api/v1`, `/apis/<group>` (APIGroup) and `/apis/<group>/<version>` (APIResourceList)."""
    parts = [p for p in path.strip("/").split("/") if p]
    if parts[0] == "api" and len(parts) == 2:
        found = discovery.api_resource_list("", parts[1])
    elif parts[0] == "apis" and len(parts) == 3:
        found = discovery.api_resource_list(parts[1], parts[2])
    elif parts[0] == "apis" and len(parts) == 2:
        group = next((g for g in discovery.api_group_list()["groups"] if g["name"] == parts[1]), None)
        found = {"kind": "APIGroup", "apiVersion": "v1", **group} if group else None
    else:
        found = None
    if found is None:
        raise NotFound(_NOT_FOUND)
    return json_response(found)


def make_app(endpoints: Endpoints, authenticator: Authenticator, *, secure: bool) -> web.Application:
    """The application for one listener (`secure`: TLS, so certificates and tokens are read)."""
    app = web.Application(middlewares=[errors, authentication(authenticator, secure)],
                          client_max_size=codec.MAX_BODY_BYTES)
    routes = Routes(endpoints, authenticator)
    app.router.add_get("/", routes.root)
    app.router.add_get("/version", routes.version)
    app.router.add_get("/version/", routes.version)
    for path in ("/healthz", "/livez", "/readyz"):
        app.router.add_get(path, routes.health)
    app.router.add_get("/api", routes.api)
    app.router.add_get("/api/", routes.api)
    app.router.add_get("/apis", routes.apis)
    app.router.add_get("/apis/", routes.apis)
    app.router.add_get("/openapi/v2", routes.openapi_v2)
    app.router.add_get("/openapi/v3", routes.openapi_v3)
    app.router.add_get("/openapi/v3/{path:.*}", routes.openapi_v3)
    app.router.add_route("*", "/api/{tail:.+}", routes.resource)
    app.router.add_route("*", "/apis/{tail:.+}", routes.resource)
    return app


def server_ssl_context(cert_file: str, key_file: str, client_ca_file: str) -> ssl.SSLContext:
    """TLS for the HTTPS listener: client certificates asked for and verified, but optional (tokens otherwise)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        context.load_verify_locations(client_ca_file)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context

