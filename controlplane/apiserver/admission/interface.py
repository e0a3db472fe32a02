"""The admission interface: the extension points a write passes after authorization.

As Kubernetes' admission.Interface, a plugin implements the stages it cares
about, and the chain (chain.py) runs every plugin of a stage in the chain's
order:

- `RequestValidator.validate_request`: what can be decided from the request
  alone, before anything is read (a node may not create pods). May raise
  Forbidden; nothing else happens then.
- `StoredObjectValidator.validate_stored`: before an update or delete changes
  the stored object, a check of that object (a node may only touch pods bound
  to it; a CSR approver needs `approve` on the stored signer). Runs again on
  each compare-and-swap retry, against the fresh copy.
- `MutationInterface.admit`: may change the object about to be validated and
  stored (LimitRanger fills requests and limits), or refuse it.
- `ValidationInterface.validate`: an async context manager entered after the
  strategy's validation and held while the object is written, so a plugin may
  keep a lock across its check and the write (ResourceQuota) and act once the
  write is done. Raising before the yield refuses the write.
- `AsyncMutationInterface.mutate`: mutation that waits on the world outside
  (the mutating webhooks). The chain awaits it at the start of `validate`:
  after the built-in mutation and the strategy's validation, before every
  validating plugin, so they all judge its result; the plugin runs the
  strategy's defaults and validation again on what it changed.

`PolicyWatcher` plugins keep a cache of the API objects that are their policy
(LimitRanges, ResourceQuotas), fed by the registry's watch; `WantsAuthorizer`
plugins are handed the apiserver's authorizer once it exists.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from google.protobuf.message import Message

from controlplane.apiserver.auth import Attributes, Authorizer
from proto.kinds import Kind

CREATE, UPDATE, DELETE = "CREATE", "UPDATE", "DELETE"


@dataclass
class Request:
    """One write as admission sees it (Kubernetes' admission.Attributes)."""

    operation: str  # CREATE, UPDATE or DELETE
    kind: Kind
    obj: Message  # the object to store (on DELETE, the stored one)
    old: Message | None = None  # the stored object on UPDATE
    subresource: str = ""
    dry_run: bool = False
    caller: Attributes | None = None  # None when the apiserver writes on its own behalf

    @property
    def namespace(self) -> str:
        return str(self.obj.metadata.namespace)  # type: ignore[attr-defined]


@runtime_checkable
class RequestValidator(Protocol):
    async def validate_request(self, attrs: Attributes) -> None: ...


@runtime_checkable
class StoredObjectValidator(Protocol):
    def validate_stored(self, attrs: Attributes, stored: Message) -> None: ...


@runtime_checkable
class MutationInterface(Protocol):
    def admit(self, request: Request) -> None: ...


@runtime_checkable
class ValidationInterface(Protocol):
    def validate(self, request: Request) -> AbstractAsyncContextManager[None]: ...


@runtime_checkable
class AsyncMutationInterface(Protocol):
    async def mutate(self, request: Request) -> None: ...


@runtime_checkable
class PolicyWatcher(Protocol):
    @property
    def policy_kind(self) -> Kind: ...

    def observe(self, event_type: str, obj: Message) -> None: ...

    def reset(self) -> None: ...


@runtime_checkable
class WantsAuthorizer(Protocol):
    def set_authorizer(self, authorizer: Authorizer) -> None: ...
