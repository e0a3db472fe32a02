"""kctl on custom resources: get, describe, delete and apply of the kinds CRDs add, over the HTTP API.

kctl's typed path is gRPC with one message per kind (proto/kinds.py); a custom
kind has no message of its own and is served only over Kubernetes' HTTP API
(controlplane/apiserver/crd/). So when a command names a type the kinds table
does not know, kctl asks the cluster's HTTP API (the kubeconfig cluster's
`server`, with the same CA, client certificate or token) as kubectl does:
aggregated discovery resolves the name (`crontabs`, `crontab`, `ct`,
`CronTab`, `crontabs.stable.example.com`), `get` prints the server's Table
(the CRD's printer columns), `describe` the object as kubectl describes
unstructured objects, `delete` deletes, and `apply` is a server-side apply
under the field manager `kctl`.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any
from urllib.parse import quote, urlencode

import yaml

from client import config as clientconfig
from kctl import context, printers
from kctl.errors import CliError, report
from proto import kinds
from proto.errors import ApiError, NotFound

DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
APPLY = "application/apply-patch+yaml"
FIELD_MANAGER = "kctl"


@dataclass(frozen=True)
class Resource:
    """A served resource as aggregated discovery lists it."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...]

    @property
    def ref(self) -> str:
        """`crontab.stable.example.com`, as kubectl names the type in its output."""
        return f"{self.singular}.{self.group}" if self.group else self.singular

    def path(self, namespace: str, name: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        scope = f"/namespaces/{quote(namespace)}" if self.namespaced and namespace else ""
        return f"{base}{scope}/{self.plural}" + (f"/{quote(name)}" if name else "")


def is_built_in(type_names: str) -> bool:
    """Whether every type in `po,svc` or `deploy/web` is in the kinds table (kctl's gRPC path)."""
    for name in type_names.split("/")[0].split(","):
        if name and name != "all":
            try:
                kinds.resolve(name)
            except NotFound:
                return False
    return True


class Api:
    """The cluster's Kubernetes HTTP API, as the current kubeconfig reaches it."""

    def __init__(self, config: clientconfig.ClientConfig) -> None:
        self.config = config
        self.base = config.url.rstrip("/")

    @contextmanager
    def _tls(self) -> Iterator[ssl.SSLContext | None]:
        if not self.base.startswith("https://"):
            yield None
            return
        tls = ssl.create_default_context(cadata=(self.config.certificate_authority_data or b"").decode() or None)
        if self.config.client_certificate_data and self.config.client_key_data:
            # ssl reads a client certificate from files only: a private directory for the call's duration.
            with tempfile.TemporaryDirectory() as folder:
                cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
                for path, data in ((cert, self.config.client_certificate_data), (key, self.config.client_key_data)):
                    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
                        out.write(data)
                tls.load_cert_chain(cert, key)
                yield tls
            return
        yield tls

    def call(self, method: str, path: str, *, body: Any = None, content_type: str = "application/json",
             accept: str = "application/json", query: dict[str, str] | None = None) -> tuple[int, Any]:
        url = self.base + path + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Accept": accept, "Content-Type": content_type,
                                                  "User-Agent": "kctl"})
        if self.config.token:
            request.add_header("Authorization", f"Bearer {self.config.token}")
        with self._tls() as tls:
            try:
                with urllib.request.urlopen(request, timeout=30, context=tls) as reply:
                    return reply.status, json.loads(reply.read() or b"null")
            except urllib.error.HTTPError as err:
                raise _server_error(err) from None
            except urllib.error.URLError as err:
                raise CliError(f"the server at {self.base} is unreachable: {err.reason}") from None

    def stream(self, path: str, *, accept: str, query: dict[str, str]) -> Iterator[dict[str, Any]]:
        """A watch: one event per JSON line, until the server ends the response."""
        request = urllib.request.Request(f"{self.base}{path}?{urlencode(query)}",
                                         headers={"Accept": accept, "User-Agent": "kctl"})
        if self.config.token:
            request.add_header("Authorization", f"Bearer {self.config.token}")
        with self._tls() as tls:
            try:
                with urllib.request.urlopen(request, context=tls) as reply:
                    for line in reply:
                        if line.strip():
                            yield json.loads(line)
            except urllib.error.HTTPError as err:
                raise _server_error(err) from None

    def resources(self) -> list[Resource]:
        found = []
        for legacy, root in ((True, "/api"), (False, "/apis")):
            _, doc = self.call("GET", root, accept=DISCOVERY)
            for group in doc.get("items", []):
                for version in group.get("versions", [])[:1]:  # the preferred version
                    for r in version.get("resources", []):
                        found.append(Resource("" if legacy else group["metadata"]["name"], version["version"],
                                              r["resource"], r.get("singularResource", ""),
                                              r.get("responseKind", {}).get("kind", ""), r.get("scope") == "Namespaced",
                                              tuple(r.get("shortNames", []))))
        return found

    def resolve(self, name: str) -> Resource:
        wanted = name.lower()
        for resource in self.resources():
            names = {resource.plural, resource.singular, resource.kind.lower(), *resource.short_names,
                     f"{resource.plural}.{resource.group}", f"{resource.singular}.{resource.group}"}
            if wanted in names:
                return resource
        raise CliError(_no_type(name))

    def for_kind(self, api_version: str, kind: str) -> Resource:
        group, _, version = api_version.rpartition("/")
        for resource in self.resources():
            if resource.group == group and resource.kind == kind:
                return Resource(group, version, resource.plural, resource.singular, kind, resource.namespaced,
                                resource.short_names)
        raise CliError(f'no matches for kind "{kind}" in version "{api_version}"')


def _server_error(err: urllib.error.HTTPError) -> ApiError:
    """The server's Status as the ApiError kctl reports (`Error from server (NotFound): ...`)."""
    try:
        status = json.loads(err.read())
    except ValueError:
        status = {}
    failure = ApiError(str(status.get("message") or err))
    failure.reason = str(status.get("reason") or err.reason)
    return failure


def api(unknown: str) -> Api:
    """The HTTP API, to look up `unknown` (what the kinds table did not know) and serve it.

    kctl dialling gRPC alone (--server HOST:PORT, no kubeconfig URL) cannot reach custom resources:
    to it, the type does not exist, as kctl has always said.
    """
    config = context.settings().config()
    if "://" not in config.url:
        raise CliError(unknown)
    return Api(config)


def _no_type(name: str) -> str:
    return f'the server doesn\'t have a resource type "{name}"'


# ---------------------------------------------------------------- commands


def parse(api_: Api, args: tuple[str, ...]) -> tuple[Resource, list[str]]:
    """`TYPE [NAME...]` or `TYPE/NAME...` of one custom type."""
    if "/" in args[0]:
        pairs = [a.partition("/") for a in args]
        types = {t for t, _, _ in pairs}
        if len(types) != 1:
            raise CliError("kctl handles one custom resource type per command")
        return api_.resolve(types.pop()), [n for _, _, n in pairs]
    return api_.resolve(args[0]), list(args[1:])


def get(args: tuple[str, ...], *, namespace: str, output: str | None, selector: str, field_selector: str,
        no_headers: bool) -> bool:
    api_ = api(_no_type(args[0].split("/")[0]))
    resource, names = parse(api_, args)
    scope = namespace if resource.namespaced else ""
    query = {k: v for k, v in (("labelSelector", selector), ("fieldSelector", field_selector)) if v}
    if output in ("yaml", "json", "name"):
        objs = ([api_.call("GET", resource.path(scope, n))[1] for n in names] if names
                else api_.call("GET", resource.path(scope), query=query)[1]["items"])
        if output == "name":
            for obj in objs:
                print(f"{resource.ref}/{obj['metadata']['name']}")
        elif names and len(objs) == 1:
            print(_dump(objs[0], output), end="")
        else:
            print(_dump({"apiVersion": "v1", "kind": "List", "items": objs, "metadata": {"resourceVersion": ""}},
                        output), end="")
        return True
    tables = ([api_.call("GET", resource.path(scope, n), accept=TABLE)[1] for n in names] if names
              else [api_.call("GET", resource.path(scope), accept=TABLE, query=query)[1]])
    view = _Columns(tables[0]["columnDefinitions"], wide=output == "wide",
                    namespaced=not namespace and resource.namespaced)
    rows = [view.row(row) for table in tables for row in table["rows"]]
    columns = view.header()
    if not rows:
        print(f"No resources found in {namespace} namespace." if namespace and resource.namespaced
              else "No resources found", file=sys.stderr)
        return True
    if not no_headers:
        rows.insert(0, columns)
    for line in printers.format_table(rows, widths=printers.column_widths(rows)):
        print(line)
    return True


class _Columns:
    """Which of a Table's columns print (priority 0, all with -o wide; NAMESPACE first with -A)."""

    def __init__(self, definitions: list[dict[str, Any]], *, wide: bool, namespaced: bool) -> None:
        self.shown = [i for i, c in enumerate(definitions) if c.get("priority", 0) == 0 or wide]
        self.names = [definitions[i]["name"].upper() for i in self.shown]
        self.namespaced = namespaced

    def header(self) -> list[str]:
        return ["NAMESPACE", *self.names] if self.namespaced else list(self.names)

    def row(self, row: dict[str, Any]) -> list[str]:
        cells = [str(row["cells"][i]) for i in self.shown]
        if self.namespaced:
            cells.insert(0, str(((row.get("object") or {}).get("metadata") or {}).get("namespace", "")))
        return cells


def watch(args: tuple[str, ...], *, namespace: str, selector: str, field_selector: str, no_headers: bool,
          wide: bool) -> None:
    """`get -w`: the Table, then a row per change, until Ctrl-C (relisting when the server says 410)."""
    api_ = api(_no_type(args[0].split("/")[0]))
    resource, names = parse(api_, args)
    if len(names) > 1:
        raise CliError("watch is only supported on individual resources and resource collections, but a list "
                       "of resources was found")
    scope = namespace if resource.namespaced else ""
    fields = ",".join(f for f in (field_selector, f"metadata.name={names[0]}" if names else "") if f)
    query = {k: v for k, v in (("labelSelector", selector), ("fieldSelector", fields)) if v}
    table = api_.call("GET", resource.path(scope), accept=TABLE, query=query)[1]
    view = _Columns(table["columnDefinitions"], wide=wide, namespaced=not namespace and resource.namespaced)
    widths: list[int] = []

    def emit(rows: list[list[str]]) -> None:
        nonlocal widths
        widths = [max(a, b) for a, b in zip_longest(widths, printers.column_widths(rows), fillvalue=0)]
        for line in printers.format_table(rows, widths=widths):
            print(line, flush=True)

    first = [view.row(r) for r in table["rows"]]
    emit(first if no_headers else [view.header(), *first])
    version = table["metadata"]["resourceVersion"]
    while True:
        for event in api_.stream(resource.path(scope), accept=TABLE, query={
                **query, "watch": "true", "allowWatchBookmarks": "true", "resourceVersion": version}):
            if event["type"] == "ERROR":  # 410: our version was compacted away; start again from now
                version = api_.call("GET", resource.path(scope), query={**query, "limit": "1"})[1]["metadata"][
                    "resourceVersion"]
                break
            obj = event["object"]
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if event["type"] != "BOOKMARK":
                emit([view.row(r) for r in obj.get("rows", [])])
                for row in obj.get("rows", []):
                    version = ((row.get("object") or {}).get("metadata") or {}).get("resourceVersion") or version
        time.sleep(0.2)  # the stream ended: reconnect without spinning


def delete(args: tuple[str, ...], *, namespace: str, ignore_not_found: bool) -> bool:
    api_ = api(_no_type(args[0].split("/")[0]))
    resource, names = parse(api_, args)
    if not names:
        raise CliError("resource(s) were provided, but no name was specified")
    ok = True
    for name in names:
        try:
            api_.call("DELETE", resource.path(namespace if resource.namespaced else "", name))
        except ApiError as err:
            if not (ignore_not_found and err.reason == "NotFound"):
                report(err)
                ok = False
            continue
        print(f'{resource.ref} "{name}" deleted')
    return ok


def describe(args: tuple[str, ...], *, namespace: str) -> bool:
    api_ = api(_no_type(args[0].split("/")[0]))
    resource, names = parse(api_, args)
    scope = namespace if resource.namespaced else ""
    objs = ([api_.call("GET", resource.path(scope, n))[1] for n in names] if names
            else api_.call("GET", resource.path(scope))[1]["items"])
    print("\n\n".join(describe_object(o) for o in objs))
    return True


def apply(documents: list[dict[str, Any]], *, namespace: str) -> bool:
    """Server-side apply each custom object; prints `crontab.stable.example.com/x created|configured|unchanged`."""
    api_ = api(f'no matches for kind "{documents[0].get("kind")}" in version "{documents[0].get("apiVersion")}"')
    for data in documents:
        resource = _established(api_, str(data.get("apiVersion", "")), str(data.get("kind", "")))
        meta = data.setdefault("metadata", {})
        scope = (meta.get("namespace") or namespace) if resource.namespaced else ""
        if resource.namespaced:
            meta["namespace"] = scope
        name = str(meta.get("name", ""))
        try:
            before = api_.call("GET", resource.path(scope, name))[1]["metadata"]["resourceVersion"]
        except ApiError:
            before = ""
        status, applied = api_.call("PATCH", resource.path(scope, name), body=json.dumps(data).encode(),
                                    content_type=APPLY, query={"fieldManager": FIELD_MANAGER, "force": "true"})
        outcome = "created" if status == 201 else (
            "unchanged" if applied["metadata"]["resourceVersion"] == before else "configured")
        print(f"{resource.ref}/{name} {outcome}")
    return True


def _established(api_: Api, api_version: str, kind: str, wait: float = 10.0) -> Resource:
    """The resource of a kind, allowing a CRD applied just before (same file) the moment to be Established."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return api_.for_kind(api_version, kind)
        except CliError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


# ---------------------------------------------------------------- describe


def _words(key: str) -> str:
    """`cronSpec` -> `Cron Spec`, as kubectl describe titles unstructured fields."""
    return " ".join(w[:1].upper() + w[1:] for w in re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key).split())


def _lines(value: Any, indent: int) -> list[str]:
    pad = "  " * indent
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                out.append(f"{pad}{_words(key)}:")
                out.extend(_lines(item, indent + 1))
            else:
                out.append(f"{pad}{_words(key)}:  {_scalar(item)}")
        return out
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, dict):
                inner = _lines(item, indent + 1)
                out.extend(inner)
            else:
                out.append(f"{pad}{_scalar(item)}")
        return out
    return [f"{pad}{_scalar(value)}"]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "<none>" if value in (None, "", {}, []) else str(value)


def describe_object(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    head = [("Name:", meta.get("name", "")), ("Namespace:", meta.get("namespace", "")),
            ("Labels:", "\n              ".join(f"{k}={v}" for k, v in labels.items()) or "<none>"),
            ("Annotations:", "\n              ".join(f"{k}: {v}" for k, v in annotations.items()) or "<none>"),
            ("API Version:", obj.get("apiVersion", "")), ("Kind:", obj.get("kind", ""))]
    lines = [f"{k:<14}{v}" for k, v in head]
    rest = {k: v for k, v in meta.items() if k not in ("name", "namespace", "labels", "annotations")}
    lines.append("Metadata:")
    lines.extend(_lines(rest, 1))
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        if isinstance(value, dict | list) and value:
            lines.append(f"{_words(key)}:")
            lines.extend(_lines(value, 1))
        else:
            lines.append(f"{_words(key) + ':':<14}{_scalar(value)}")
    lines.append(f"{'Events:':<14}<none>")
    return "\n".join(lines)


def _dump(data: Any, output: str) -> str:
    if output == "json":
        return json.dumps(data, indent=4) + "\n"
    return str(yaml.safe_dump(data, sort_keys=False))
