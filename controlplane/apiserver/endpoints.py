"""The apiserver's request core: what a request means, whichever transport carried it.

kube-apiserver's handler chain, without the wire: every request names who asks
(the authenticated `UserInfo`), a verb and a resource; `Endpoints` then

1. authorises it (RBAC: may this user do this verb here?),
2. runs admission's checks of the request alone (node restriction),
3. makes the registry call, which runs defaulting, validation and the rest of
   the admission chain around the write (registry.py),
4. writes the audit record once the request has ended, with its outcome and
   the audit annotations admission added.

What admission says besides yes or no (warnings.py: `Warning:` texts for the
client) is recorded per request; a transport wraps each request it serves in
`collect_warnings()` and sends what it collected, with the answer or the error:
HTTP as `Warning` headers, gRPC as `warning` trailing metadata.

The gRPC service (server.py) and the HTTP API (http/) are thin adapters over
this class: they decode, authenticate, call one method here, and encode the
answer or the `ApiError`. Nothing here knows about gRPC contexts or HTTP
requests, so both transports share one source of truth for who may do what.

Admission and the registry see what a request does to stored objects rather
than how it was phrased: a patch reaches them as an update and a delete of a
collection as one delete per object (as Kubernetes' admission operations
CREATE, UPDATE, DELETE), so a check written for updates cannot be side-stepped
with a PATCH. Authorisation and audit keep the verb the client used.
"""

from __future__ import annotations

import builtins
import platform
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace

from google.protobuf.message import Message

from controlplane.apiserver import admission
from controlplane.apiserver.audit import AuditLog
from controlplane.apiserver.auth import AUTHENTICATED, AlwaysAllow, Attributes, Authorizer, UserInfo
from controlplane.apiserver.proxy import KubeletClientTLS, KubeletProxy
from controlplane.apiserver.registry import Event, Registry
from controlplane.apiserver.serviceaccount.authenticator import ServiceAccountTokens
from controlplane.apiserver.serviceaccount.tokens import TokenIssuer
from proto import authentication_pb2, core_pb2, kinds
from proto.errors import ApiError, Conflict, NotFound

GIT_VERSION = "v1.32.0+flotilla"  # kubectl's dispatcher picks its kubectl by the minor version
BOOKMARK_INTERVAL = 30.0  # seconds of quiet before a watch gets a bookmark
PATCH_RETRIES = 16  # a patch is re-applied to a newer object this often before Conflict

# The verb admission and the registry see for the verb a client used.
_ADMISSION_VERB = {"patch": "update", "deletecollection": "delete"}
# Subresources that are views of the main object: a write through them stores the whole object.
_STORED_AS = {"scale": ""}
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}

PODS = kinds.resolve("pods")
SERVICE_ACCOUNTS = kinds.resolve("serviceaccounts")

# Turns the current object (None: there is none) into the object to store.
Transform = Callable[[Message | None], Message]

# The warnings of the request a transport is serving (collect_warnings), for every call it makes.
_warnings: ContextVar[builtins.list[str] | None] = ContextVar("flotilla_request_warnings", default=None)


@contextmanager
def collect_warnings() -> Iterator[builtins.list[str]]:
    """What a transport wraps one request in: admission's warnings of every call inside land in the list.

    The list fills as calls end, refused ones included (Kubernetes sends the
    warnings with the error too), each text once, in order.
    """
    collected: builtins.list[str] = []
    token = _warnings.set(collected)
    try:
        yield collected
    finally:
        _warnings.reset(token)


def _hand_over(warnings: builtins.list[str]) -> None:
    collected = _warnings.get()
    if collected is not None:
        collected.extend(w for w in warnings if w not in collected)


@dataclass(frozen=True)
class ListPage:
    """One page of a list: the items still encoded, and where the next page starts."""

    items: list[bytes]
    resource_version: str
    continue_token: str = ""
    remaining_item_count: int = 0


@dataclass(frozen=True)
class DeleteOptions:
    """metav1.DeleteOptions, as both transports carry them."""

    grace_period_seconds: int | None = None
    propagation_policy: str = ""  # Background (default), Foreground or Orphan
    uid: str = ""  # precondition: delete only this incarnation
    resource_version: str = ""  # precondition: delete only this version
    dry_run: bool = False


@dataclass(frozen=True)
class AccessReview:
    """The answer to "may this user do this?" (SelfSubjectAccessReview / SubjectAccessReview)."""

    allowed: bool
    user: str
    reason: str = ""


def version_info(etcd_version: str = "") -> dict[str, str]:
    """version.Info as `/version` answers it (kubectl reads major and minor first)."""
    machine = platform.machine()
    info = {
        "major": "1",
        "minor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": f"python{platform.python_version()}",
        "compiler": platform.python_implementation().lower(),
        "platform": f"{platform.system().lower()}/{_GO_ARCH.get(machine, machine)}",
    }
    if etcd_version:
        info["etcdVersion"] = etcd_version
    return info


class Endpoints:
    """Every API operation, as a method taking the caller and plain arguments."""

    def __init__(self, registry: Registry, *, authorizer: Authorizer | None = None, audit: AuditLog | None = None,
                 kubelet_tls: KubeletClientTLS | None = None, bookmark_interval: float = BOOKMARK_INTERVAL) -> None:
        self.registry = registry
        self.authorizer = authorizer or AlwaysAllow()
        self.audit = audit
        self.bookmark_interval = bookmark_interval
        self.kubelets = KubeletProxy(registry, kubelet_tls)
        # serviceaccounts/token: set by the apiserver once it has a signing key (serviceaccount/).
        self.token_issuer: TokenIssuer | None = None
        self.service_account_tokens: ServiceAccountTokens | None = None  # TokenReviews for other audiences
        self.max_token_seconds = 0  # --service-account-max-token-expiration (0: no cap)
        registry.admission.set_authorizer(self.authorizer)  # CSR approval checks the signer itself

    # ------------------------------------------------------------------ the chain

    @asynccontextmanager
    async def request(self, user: UserInfo, verb: str, kind: kinds.Kind, namespace: str = "", name: str = "",
                      subresource: str = "") -> AsyncIterator[Attributes]:
        """Authorise and admit one request; the body runs the call; the audit record follows.

        Yields the attributes admission and the registry see (the admission verb).
        """
        started = time.monotonic()
        attrs = Attributes(user, verb, kind.resource, namespace if kind.namespaced else "", name, subresource,
                           kind.group)
        with admission.recording() as recorded:
            try:
                self.authorizer.authorize(attrs)
                admitted = replace(attrs, verb=_ADMISSION_VERB.get(verb, verb))
                await self.registry.admission.validate_request(admitted)
                yield admitted
            except ApiError as err:
                self._audit(attrs, err.reason, started, recorded)
                raise
            except Exception:
                self._audit(attrs, "InternalError", started, recorded)
                raise
            finally:
                _hand_over(recorded.warnings)
            self._audit(attrs, "OK", started, recorded)

    def _audit(self, attrs: Attributes, result: str, started: float, recorded: admission.Recorded) -> None:
        if self.audit is not None:
            self.audit.record(attrs, result, started, annotations=recorded.annotations)

    # ------------------------------------------------------------------ reads

    async def get(self, user: UserInfo, kind: kinds.Kind, namespace: str, name: str,
                  subresource: str = "") -> Message:
        async with self.request(user, "get", kind, namespace, name, subresource):
            return await self.registry.get(kind, namespace, name)

    async def list(self, user: UserInfo, kind: kinds.Kind, namespace: str, *, label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_token: str = "",
                   resource_version: str = "") -> ListPage:
        """One page; `resource_version` as Kubernetes reads it: "" the latest (consistent), "0" whatever the
        watch cache holds, N at least as new as N."""
        async with self.request(user, "list", kind, namespace):
            items, revision, token, remaining = await self.registry.list(
                kind, namespace, label_selector, field_selector, limit, continue_token,
                resource_version=resource_version)
        return ListPage(items, str(revision), token, remaining)

    async def watch(self, user: UserInfo, kind: kinds.Kind, namespace: str, *, resource_version: str = "",
                    label_selector: str = "", field_selector: str = "",
                    allow_bookmarks: bool = False) -> AsyncIterator[Event]:
        """Authorise, then the registry's event stream (its errors, e.g. Gone, come while iterating)."""
        async with self.request(user, "watch", kind, namespace):
            pass
        interval = self.bookmark_interval if allow_bookmarks else 0.0
        return self.registry.watch(kind, namespace, resource_version, label_selector, field_selector, interval)

    # ------------------------------------------------------------------ writes

    async def create(self, user: UserInfo, kind: kinds.Kind, namespace: str, obj: Message, *,
                     dry_run: bool = False) -> Message:
        name = obj.metadata.name  # type: ignore[attr-defined]
        async with self.request(user, "create", kind, namespace, name) as attrs:
            return await self.registry.create(kind, namespace, obj, dry_run=dry_run, caller=attrs)

    async def update(self, user: UserInfo, kind: kinds.Kind, namespace: str, obj: Message, *,
                     subresource: str = "", dry_run: bool = False) -> Message:
        """Replace an object (or a subresource of it); a stale resourceVersion is a Conflict."""
        name = obj.metadata.name  # type: ignore[attr-defined]
        async with self.request(user, "update", kind, namespace, name, subresource) as attrs:
            stored_as = _STORED_AS.get(subresource, subresource)
            return await self.registry.update(kind, namespace, obj, subresource=stored_as, dry_run=dry_run,
                                              caller=attrs)

    async def patch(self, user: UserInfo, kind: kinds.Kind, namespace: str, name: str, transform: Transform, *,
                    subresource: str = "", dry_run: bool = False, create_missing: bool = False,
                    verb: str = "patch") -> Message:
        """Apply `transform` to the object as stored now and store the result.

        Patches (and server-side apply) do this; so does an update through a view of
        the object such as `scale` (with `verb="update"`).

        The result carries the resourceVersion it was computed from, so a write
        that raced is a Conflict, and the patch is applied again to the newer
        object (unless the patch itself named a resourceVersion: then the
        Conflict is the client's). With `create_missing` (server-side apply) a
        missing object is created from `transform(None)`, which needs the
        right to create as well.
        """
        stored_as = _STORED_AS.get(subresource, subresource)
        async with self.request(user, verb, kind, namespace, name, subresource) as attrs:
            for _attempt in range(PATCH_RETRIES):
                try:
                    current: Message | None = await self.registry.get(kind, namespace, name)
                except NotFound:
                    if not create_missing or subresource:
                        raise
                    current = None
                if current is None:
                    async with self.request(user, "create", kind, namespace, name) as creating:
                        return await self.registry.create(kind, namespace, transform(None), dry_run=dry_run,
                                                          caller=creating)
                read_version = current.metadata.resource_version  # type: ignore[attr-defined]
                new = transform(current)
                try:
                    return await self.registry.update(kind, namespace, new, subresource=stored_as,
                                                      dry_run=dry_run, caller=attrs)
                except Conflict:
                    if new.metadata.resource_version != read_version:  # type: ignore[attr-defined]
                        raise
            raise Conflict(f'Operation cannot be fulfilled on {kind.qualified_resource} "{name}": the object has '
                           "been modified; please apply your changes to the latest version and try again")

    async def delete(self, user: UserInfo, kind: kinds.Kind, namespace: str, name: str,
                     options: DeleteOptions = DeleteOptions()) -> Message:
        async with self.request(user, "delete", kind, namespace, name) as attrs:
            return await self._delete(kind, namespace, name, options, attrs)

    async def _delete(self, kind: kinds.Kind, namespace: str, name: str, options: DeleteOptions,
                      attrs: Attributes) -> Message:
        return await self.registry.delete(
            kind, namespace, name, grace_period=options.grace_period_seconds,
            propagation_policy=options.propagation_policy, uid=options.uid,
            resource_version=options.resource_version, dry_run=options.dry_run, caller=attrs)

    async def delete_collection(self, user: UserInfo, kind: kinds.Kind, namespace: str, *,
                                label_selector: str = "", field_selector: str = "",
                                options: DeleteOptions = DeleteOptions()) -> builtins.list[Message]:
        """Delete every object the selectors pick; the objects as deleted (or marked terminating)."""
        async with self.request(user, "deletecollection", kind, namespace) as attrs:
            items, _, _, _ = await self.registry.list(kind, namespace, label_selector, field_selector)
            deleted = []
            for raw in items:
                obj = kind.message()
                obj.ParseFromString(raw)
                meta = obj.metadata  # type: ignore[attr-defined]
                try:
                    deleted.append(await self._delete(kind, meta.namespace, meta.name, options,
                                                      replace(attrs, name=meta.name, namespace=meta.namespace)))
                except NotFound:
                    continue  # gone meanwhile: that is what was asked
            return deleted

    async def evict(self, user: UserInfo, namespace: str, name: str,
                    options: DeleteOptions = DeleteOptions()) -> Message:
        """pods/eviction (`kubectl drain`): a delete its PodDisruptionBudget must allow (subresources/eviction.py)."""
        from controlplane.apiserver.subresources import eviction
        async with self.request(user, "create", PODS, namespace, name, "eviction") as attrs:
            return await eviction.evict(self.registry, namespace, name, options, attrs)

    async def create_token(self, user: UserInfo, namespace: str, name: str,
                           request: authentication_pb2.TokenRequest) -> authentication_pb2.TokenRequest:
        """serviceaccounts/token (`kubectl create token`, the kubelet): a signed token, never stored."""
        from controlplane.apiserver.serviceaccount import tokenrequest
        async with self.request(user, "create", SERVICE_ACCOUNTS, namespace, name, "token"):
            if self.token_issuer is None:
                raise NotFound("the server could not find the requested resource (serviceaccounts/token): "
                               "this apiserver has no service-account signing key")

            async def get(resource: str, ns: str, object_name: str) -> Message:
                return await self.registry.get(kinds.resolve(resource), ns, object_name)
            return await tokenrequest.create_token(self.token_issuer, get, user, namespace, name, request,
                                                   max_seconds=self.max_token_seconds)

    async def bind(self, user: UserInfo, namespace: str, binding: core_pb2.Binding) -> core_pb2.Pod:
        """pods/binding: the scheduler's decision for one pod."""
        async with self.request(user, "create", PODS, namespace, binding.metadata.name, "binding"):
            return await self.registry.bind(namespace, binding)

    # ------------------------------------------------------------------ questions

    async def review_access(self, caller: UserInfo, verb: str, resource: str, namespace: str = "", name: str = "",
                            *, user: str = "", groups: tuple[str, ...] = ()) -> AccessReview:
        """May `user` (default: the caller) do `verb` on `resource` ("pods", "pods/log")?

        Asking about someone else is a SubjectAccessReview, for reviewers only.
        """
        subject = caller
        if user and user != caller.name:
            self.authorizer.authorize(Attributes(caller, "create", "subjectaccessreviews",
                                                 api_group="authorization.k8s.io"))
            subject = UserInfo(user, (*groups, AUTHENTICATED))
        plural, _, subresource = resource.partition("/")
        kind = kinds.resolve(plural)
        attrs = Attributes(subject, verb, kind.resource, namespace if kind.namespaced else "", name, subresource,
                           kind.group)
        try:
            self.authorizer.authorize(attrs)
        except ApiError as denied:
            if denied.reason != "Forbidden":
                raise
            return AccessReview(False, subject.name, str(denied))
        return AccessReview(True, subject.name)

    async def version(self, user: UserInfo | None = None) -> dict[str, str]:
        """What `/version` answers. Anyone may ask (kubectl asks before it has credentials), so the
        storage's version — a fact for an attacker picking exploits — is only told to a signed-in user."""
        return version_info(await self.registry.storage.etcd_version() if user is not None else "")

    # ------------------------------------------------------------------ node proxies

    async def authorize_node_proxy(self, user: UserInfo, verb: str, namespace: str, pod: str,
                                   subresource: str) -> None:
        """pods/log (get), pods/exec, pods/attach, pods/portforward (create): checked before dialing a kubelet."""
        async with self.request(user, verb, PODS, namespace, pod, subresource):
            pass
