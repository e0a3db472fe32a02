"""What both webhook plugins share: the configurations, who is called, and what a failure means.

Kubernetes' webhook/generic, for one configuration kind each:

- `Source` keeps the configurations as the registry's watch reports them
  (list, then watch; the chain feeds it as a PolicyWatcher; storage itself
  until the first list arrives) and flattens them into `Hook`s: configurations
  by name, webhooks in their listed order, each with its selectors parsed once;
- `Webhooks.invocations` picks the hooks a write goes to (matching.py). The
  apiserver's own writes (no caller) and the admission configurations are
  never sent, so a broken webhook can always be deleted and bootstrap never
  waits on one;
- `Webhooks.call` asks one webhook (client.py, review.py) and returns its
  verified answer, or raises `CallFailed` (Kubernetes' ErrCallingWebhook)
  which the failurePolicy turns into an InternalError (Fail) or a logged,
  audit-annotated pass (Ignore); a refusal becomes `Denied` with the webhook's
  status code (403 unless it says otherwise) and its message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message

from controlplane.apiserver.admission.interface import DELETE, Request
from controlplane.apiserver.admission.warnings import add_annotation, add_warning
from controlplane.apiserver.admission.webhook import matching, review
from controlplane.apiserver.admission.webhook.client import CallError, EndpointResolver, StoredObjects, WebhookClient
from proto import admissionregistration_pb2, kinds, selectors
from proto.errors import ApiError, BadRequest

log = logging.getLogger(__name__)

Webhook = admissionregistration_pb2.ValidatingWebhook | admissionregistration_pb2.MutatingWebhook
ReadNamespace = Callable[[str], Awaitable[Message | None]]
_GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
               403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
               409: grpc.StatusCode.ABORTED, 422: grpc.StatusCode.INVALID_ARGUMENT,
               429: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}


@dataclass(frozen=True)
class Hook:
    """One webhook of one configuration, as the plugins call it."""

    configuration: str
    index: int  # its place among all of the plugin's webhooks (the audit annotations' index)
    webhook: Webhook
    namespace_selector: selectors.LabelSelector
    object_selector: selectors.LabelSelector

    @property
    def name(self) -> str:
        return self.webhook.name

    @property
    def fails_open(self) -> bool:
        return self.webhook.failure_policy == "Ignore"


class CallFailed(Exception):
    """A webhook could not be called or answered nonsense (Kubernetes' ErrCallingWebhook)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f'failed calling webhook "{name}": {reason}')


class Denied(ApiError):
    """A webhook refused the write: its status code and reason, `admission webhook "x" denied the request`."""

    def __init__(self, name: str, status: dict[str, object]) -> None:
        message = str(status.get("message") or "")
        reason_text = str(status.get("reason") or "")
        denied = f'admission webhook "{name}" denied the request'
        if message or reason_text:
            denied += f": {message or reason_text}"
        else:
            denied += " without explanation"
        super().__init__(denied)
        code = status.get("code")
        self.http_code = code if isinstance(code, int) and code >= 400 else 403
        self.reason = reason_text or ("Forbidden" if self.http_code == 403 else "")
        self.code = _GRPC_CODES.get(self.http_code, grpc.StatusCode.UNKNOWN)


def internal_error(failure: Exception) -> ApiError:
    """Kubernetes' NewInternalError: HTTP 500, reason InternalError."""
    return ApiError(f"Internal error occurred: {failure}")


class Source:
    """One kind of webhook configuration as last seen, flattened into hooks.

    Until the registry's watch has delivered its first list (the apiserver serves
    requests a moment before), and in an apiserver that runs no such watch, the
    configurations are read from storage on each use: slower, never stale, never
    skipped.
    """

    def __init__(self, list_stored: Callable[[], Awaitable[Sequence[Message]]]) -> None:
        self._list_stored = list_stored
        self._configurations: dict[str, Message] = {}
        self._hooks: list[Hook] | None = []
        self.synced = False

    def observe(self, event_type: str, configuration: Message) -> None:
        name = configuration.metadata.name  # type: ignore[attr-defined]
        if event_type == "DELETED":
            self._configurations.pop(name, None)
        else:
            self._configurations[name] = configuration
        self._hooks = None

    def reset(self) -> None:
        # The registry's mirror delivers the whole list right after this, before anything else runs.
        self._configurations.clear()
        self._hooks = None
        self.synced = True

    async def hooks(self) -> list[Hook]:
        if not self.synced:
            return _flatten({c.metadata.name: c for c in await self._list_stored()})  # type: ignore[attr-defined]
        if self._hooks is None:
            self._hooks = _flatten(self._configurations)
        return self._hooks


def _flatten(configurations: dict[str, Message]) -> list[Hook]:
    """Every webhook of every configuration: configurations by name, webhooks as listed."""
    found: list[Hook] = []
    for name in sorted(configurations):
        for webhook in configurations[name].webhooks:  # type: ignore[attr-defined]
            found.append(Hook(name, len(found), webhook, _selector(webhook.namespace_selector),
                              _selector(webhook.object_selector)))
    return found


def _selector(message: Message) -> selectors.LabelSelector:
    try:
        return selectors.from_message(message)  # type: ignore[arg-type]
    except BadRequest:
        return selectors.NOTHING  # validation refuses these; one stored before would select nothing


class Webhooks:
    """The base of both plugins: a configuration kind's hooks, their matching and calling."""

    NAME = ""
    CONFIGURATION = ""  # the resource of the configuration kind
    MUTATING = False

    def __init__(self, read_namespace: ReadNamespace, stored_objects: StoredObjects | None) -> None:
        stored = stored_objects or _no_objects
        self.source = Source(lambda: stored(self.policy_kind, ""))
        self._read_namespace = read_namespace
        self._client = WebhookClient(EndpointResolver(stored))

    # PolicyWatcher: the registry's watch of the configurations feeds the source.
    @property
    def policy_kind(self) -> kinds.Kind:
        return kinds.resolve(self.CONFIGURATION)

    def observe(self, event_type: str, configuration: Message) -> None:
        self.source.observe(event_type, configuration)

    def reset(self) -> None:
        self.source.reset()

    async def attributes(self, request: Request) -> matching.Attributes | None:
        """The write as the matchers see it, or None if no webhook may see it at all."""
        kind = request.kind
        if request.caller is None or kind.in_memory or matching.exempt(kind):
            return None
        obj: Message | None = request.obj
        old = request.old
        if request.operation == DELETE:
            obj, old = None, request.obj
        namespace = request.namespace if kind.namespaced else ""
        if kind.group == "" and kind.resource == "namespaces":
            namespace = _name(request.obj)
        return matching.Attributes(request.operation, kind, namespace, request.subresource, obj, old)

    async def invocations(self, attrs: matching.Attributes) -> Sequence[Hook]:
        """The hooks that want this write, in calling order."""
        hooks = [h for h in await self.source.hooks() if matching.rules_match(h.webhook.rules, attrs)]
        if not hooks:
            return []
        if attrs.kind.namespaced and any(not h.namespace_selector.empty() for h in hooks):
            ns = await self._read_namespace(attrs.namespace)
            labels = dict(ns.metadata.labels) if ns is not None else {}  # type: ignore[attr-defined]
            attrs = matching.Attributes(attrs.operation, attrs.kind, attrs.namespace, attrs.subresource,
                                        attrs.obj, attrs.old, labels)
        return [h for h in hooks if matching.namespace_selector_matches(h.namespace_selector, attrs)
                and matching.object_selector_matches(h.object_selector, attrs)]

    async def call(self, hook: Hook, attrs: matching.Attributes, request: Request) -> review.Response:
        """One webhook's verified answer (warnings and audit annotations recorded); CallFailed if none."""
        webhook = hook.webhook
        if request.dry_run and webhook.side_effects not in ("None", "NoneOnDryRun"):
            raise BadRequest(f'admission webhook "{webhook.name}" does not support dry run')
        body = review.request(attrs, request.caller.user if request.caller else None, dry_run=request.dry_run)
        uid = body["request"]["uid"]
        try:
            answer = await self._client.post(webhook.client_config, body, webhook.timeout_seconds or 10)
            response = review.verify(uid, answer, mutating=self.MUTATING)
        except CallError as exc:
            raise CallFailed(webhook.name, f"failed to call webhook: {exc}") from None
        except review.InvalidResponse as exc:
            raise CallFailed(webhook.name, f"received invalid webhook response: {exc}") from None
        for key, value in response.audit_annotations.items():
            add_annotation(f"{webhook.name}/{key}", value)
        for text in response.warnings:
            add_warning(text)
        return response

    def failed_open(self, hook: Hook, failure: CallFailed, stage: str) -> None:
        """failurePolicy Ignore: the write goes on; the failure is logged and marked in the audit record."""
        log.warning("Failed calling webhook, failing open %s: %s", hook.name, failure)
        add_annotation(f"failed-open.{stage}.webhook.admission.k8s.io/round_0_index_{hook.index}", hook.name)

    async def close(self) -> None:
        await self._client.close()


def _name(obj: Message | None) -> str:
    return str(getattr(getattr(obj, "metadata", None), "name", "")) or "Unknown"


async def _no_objects(kind: kinds.Kind, namespace: str) -> Sequence[Message]:
    return []
