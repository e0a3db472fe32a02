"""MutatingAdmissionWebhook: the mutating webhooks, one after another, each seeing the last one's result.

After Flotilla's built-in mutation (LimitRanger...) and the strategy's
validation, the chain hands the write here before any validating plugin runs
(chain.py), so PodSecurity, quota and the validating webhooks judge the object
as the mutating webhooks left it. Hooks are called in order (configurations by
name, webhooks as listed), each with the object as the previous ones patched
it; a JSONPatch answer is applied to the object's Kubernetes JSON and decoded
back. Once all have answered, a changed object gets the strategy's defaults
and validation again, keeps the server-owned metadata (uid, creationTimestamp,
resourceVersion...) whatever a patch did to it, and gets a new generation if
its spec changed on an update. Each webhook is called once (reinvocationPolicy
IfNeeded is accepted and treated as Never).

Every call is recorded in the audit log as Kubernetes does
(`mutation.webhook.admission.k8s.io/round_0_index_N`), and failing open as
`failed-open.mutation.webhook.admission.k8s.io/round_0_index_N`.
"""

from __future__ import annotations

import json

import jsonpatch
import jsonpointer
from google.protobuf.message import Message

from controlplane.apiserver import strategies
from controlplane.apiserver.admission.interface import CREATE, DELETE, UPDATE, Request
from controlplane.apiserver.admission.warnings import add_annotation
from controlplane.apiserver.admission.webhook import generic, matching, review
from controlplane.apiserver.strategies.base import spec_bytes
from proto import meta_pb2
from proto.errors import BadRequest, Invalid

NAME = "MutatingAdmissionWebhook"


class MutatingAdmissionWebhook(generic.Webhooks):
    """An asynchronous mutating plugin (interface.WebhookMutationInterface)."""

    NAME = NAME
    CONFIGURATION = "mutatingwebhookconfigurations"
    MUTATING = True

    async def mutate(self, request: Request) -> None:
        attrs = await self.attributes(request)
        if attrs is None:
            return
        hooks = await self.invocations(attrs)
        if not hooks:
            return
        before = type(request.obj)()
        before.CopyFrom(request.obj)
        changed = False
        for hook in hooks:
            # Later hooks match against, and are sent, the object as the earlier ones left it.
            if changed and not matching.object_selector_matches(hook.object_selector, attrs):
                continue
            try:
                response = await self.call(hook, attrs, request)
            except generic.CallFailed as failure:
                if hook.fails_open:
                    self.failed_open(hook, failure, "mutation")
                    continue
                raise generic.internal_error(failure) from None
            mutated = self._apply(hook, response, request)
            self._annotate(hook, mutated)
            if mutated:
                changed = True
                attrs = matching.Attributes(attrs.operation, attrs.kind, attrs.namespace, attrs.subresource,
                                            request.obj, attrs.old, attrs.namespace_labels)
        if changed:
            _after_mutation(request, before)

    def _apply(self, hook: generic.Hook, response: review.Response, request: Request) -> bool:
        """Apply an allowing answer's patch to the object in place; whether it changed anything."""
        if not response.allowed:
            raise generic.Denied(hook.name, response.status)
        if response.patch is None or not list(response.patch):
            return False
        if request.operation == DELETE:
            raise generic.internal_error(Exception(
                f'admission webhook "{hook.name}" attempted to modify the object, which is not supported '
                "for this operation"))
        current = review.object_json(request.obj, request.kind)
        try:
            patched = response.patch.apply(current)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise generic.internal_error(Exception(
                f'admission webhook "{hook.name}" returned a patch that does not apply: {exc}')) from None
        if patched == current:
            return False
        updated = review.from_json(patched, request.kind)
        meta, new_meta = request.obj.metadata, updated.metadata  # type: ignore[attr-defined]
        if (new_meta.name, new_meta.namespace) != (meta.name, meta.namespace):
            raise BadRequest(f'admission webhook "{hook.name}" may not change the name or namespace of the object')
        _keep_server_owned(new_meta, meta)
        request.obj.CopyFrom(updated)
        return True

    def _annotate(self, hook: generic.Hook, mutated: bool) -> None:
        add_annotation(f"mutation.webhook.admission.k8s.io/round_0_index_{hook.index}",
                       json.dumps({"configuration": hook.configuration, "webhook": hook.name,
                                   "mutated": mutated}, separators=(",", ":")))


def _keep_server_owned(new: meta_pb2.ObjectMeta, old: meta_pb2.ObjectMeta) -> None:
    """What the registry set before admission stays, whatever a patch did to it."""
    new.uid, new.resource_version, new.generation = old.uid, old.resource_version, old.generation
    for name in ("creation_timestamp", "deletion_timestamp", "deletion_grace_period_seconds", "managed_fields"):
        new.ClearField(name)
    new.managed_fields.extend(old.managed_fields)
    if old.HasField("creation_timestamp"):
        new.creation_timestamp.CopyFrom(old.creation_timestamp)
    if old.HasField("deletion_timestamp"):
        new.deletion_timestamp.CopyFrom(old.deletion_timestamp)
    if old.HasField("deletion_grace_period_seconds"):
        new.deletion_grace_period_seconds = old.deletion_grace_period_seconds


def _after_mutation(request: Request, before: Message) -> None:
    """The strategy's defaults and validation for what the webhooks made (the registry ran them on `before`)."""
    kind, obj, old = request.kind, request.obj, request.old
    strategy = strategies.for_kind(kind)
    if request.operation == CREATE:
        strategy.default(obj)
        errors = strategy.validate(kind, obj)
    elif request.operation == UPDATE and request.subresource:
        errors = strategy.validate_status_update(kind, obj, old) if old is not None else []
    else:
        strategy.default(obj)
        errors = strategy.validate_update(kind, obj, old) if old is not None else []
        meta = obj.metadata  # type: ignore[attr-defined]
        if old is not None and spec_bytes(obj) != spec_bytes(before) and meta.generation == old.metadata.generation:  # type: ignore[attr-defined]
            meta.generation += 1
    if errors:
        raise Invalid(f'{kind.kind} "{obj.metadata.name}"', errors)  # type: ignore[attr-defined]
