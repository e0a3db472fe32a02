"""ServiceAccount admission: every pod runs as a service account and, unless it opts out, gets its API token.

As Kubernetes' ServiceAccount plugin, on pod create:

- `spec.serviceAccountName` defaults to `default`; the account must exist
  (`pods "web" is forbidden: error looking up service account ns/robot: serviceaccount "robot" not found`);
- unless `automountServiceAccountToken` is false on the pod (or, when the pod does
  not say, on the account), the pod gets the projected volume `kube-api-access-<5
  random>` — a bound token (expirationSeconds 3607, refreshed by the kubelet), the
  cluster CA (`kube-root-ca.crt`'s `ca.crt`) and the namespace — mounted read-only at
  /var/run/secrets/kubernetes.io/serviceaccount in every container (and init
  container) that has nothing mounted there already;
- a mirror pod (a kubelet's static pod) may not name a service account nor use
  Secrets, ConfigMaps or projected volumes, as the API it mirrors cannot vouch for them.

One difference, said here: when the namespace's `default` account does not exist
(yet — the serviceaccount controller makes it within moments of the namespace, and
apiservers run without a controller manager never get one), Kubernetes refuses the
pod; Flotilla admits it without a token volume (logged). Accounts named
explicitly must exist.

Accounts are read from a copy the registry keeps current (PolicyWatcher); a miss is
checked against what is stored before a pod is refused.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from google.protobuf.message import Message

from controlplane.apiserver.admission.interface import CREATE, Request
from proto import core_pb2, kinds
from proto.errors import Forbidden
from proto.wellknown import ANNOTATION_MIRROR_POD

log = logging.getLogger(__name__)

NAME = "ServiceAccount"
DEFAULT = "default"
MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
TOKEN_SECONDS = 3607  # an hour and a bit: Kubernetes' tell-tale for tokens the admission asked for
ROOT_CA_CONFIG_MAP = "kube-root-ca.crt"
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' utilrand alphabet

ServiceAccounts = Callable[[kinds.Kind, str], Awaitable[Sequence[Message]]]


def api_access_volume(name: str) -> core_pb2.Volume:
    volume = core_pb2.Volume(name=name)
    projected = volume.projected
    projected.default_mode = 0o644
    token = projected.sources.add().service_account_token
    token.expiration_seconds, token.path = TOKEN_SECONDS, "token"
    ca = projected.sources.add().config_map
    ca.name = ROOT_CA_CONFIG_MAP
    ca.items.add(key="ca.crt", path="ca.crt")
    namespace = projected.sources.add().downward_api.items.add(path="namespace")
    namespace.field_ref.api_version, namespace.field_ref.field_path = "v1", "metadata.namespace"
    return volume


def _is_mirror(pod: core_pb2.Pod) -> bool:
    return ANNOTATION_MIRROR_POD in pod.metadata.annotations


class ServiceAccountAdmission:
    """Mutating (account name, token volume) and validating (the account exists)."""

    NAME = NAME
    policy_kind = kinds.resolve("serviceaccounts")

    def __init__(self, stored: ServiceAccounts | None = None) -> None:
        self.stored = stored
        self.accounts: dict[tuple[str, str], core_pb2.ServiceAccount] = {}

    def observe(self, event_type: str, obj: Message) -> None:
        if not isinstance(obj, core_pb2.ServiceAccount):
            return
        key = (obj.metadata.namespace, obj.metadata.name)
        if event_type == "DELETED":
            self.accounts.pop(key, None)
        else:
            self.accounts[key] = obj

    def reset(self) -> None:
        self.accounts.clear()

    # ------------------------------------------------------------------ mutation

    def admit(self, request: Request) -> None:
        if request.operation != CREATE or request.subresource or not isinstance(request.obj, core_pb2.Pod):
            return
        pod = request.obj
        if _is_mirror(pod):
            self._check_mirror(pod)
            return
        spec = pod.spec
        if not spec.service_account_name:
            spec.service_account_name = spec.service_account or DEFAULT
        spec.service_account = spec.service_account_name  # the deprecated alias follows, as Kubernetes sets it
        account = self.accounts.get((pod.metadata.namespace, spec.service_account_name))
        if account is None and spec.service_account_name == DEFAULT:
            return  # validate() says so; no token for an account that is not there
        if not self._automount(pod, account):
            return
        self._mount_token(pod)

    @staticmethod
    def _automount(pod: core_pb2.Pod, account: core_pb2.ServiceAccount | None) -> bool:
        if pod.spec.HasField("automount_service_account_token"):
            return pod.spec.automount_service_account_token
        if account is not None and account.HasField("automount_service_account_token"):
            return account.automount_service_account_token
        return True

    @staticmethod
    def _mount_token(pod: core_pb2.Pod) -> None:
        containers = [*pod.spec.init_containers, *pod.spec.containers]
        needing = [c for c in containers if not any(m.mount_path == MOUNT_PATH for m in c.volume_mounts)]
        if not needing:
            return
        taken = {v.name for v in pod.spec.volumes}
        name = ""
        while not name or name in taken:
            name = VOLUME_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(5))
        pod.spec.volumes.append(api_access_volume(name))
        for container in needing:
            container.volume_mounts.add(name=name, read_only=True, mount_path=MOUNT_PATH)

    @staticmethod
    def _check_mirror(pod: core_pb2.Pod) -> None:
        what = f'pods "{pod.metadata.name}" is forbidden: '
        if pod.spec.service_account_name:
            raise Forbidden(what + "a mirror pod may not reference service accounts")
        for volume in pod.spec.volumes:
            for field, kind in (("secret", "secret"), ("config_map", "configmap"), ("projected", "projected")):
                if volume.HasField(field):  # type: ignore[arg-type]
                    raise Forbidden(what + f'volume "{volume.name}" of type {kind} is not allowed in a mirror pod')

    # ------------------------------------------------------------------ validation

    @asynccontextmanager
    async def validate(self, request: Request) -> AsyncIterator[None]:
        if request.operation == CREATE and not request.subresource and isinstance(request.obj, core_pb2.Pod) \
                and not _is_mirror(request.obj):
            await self._check_account(request.obj)
        yield

    async def _check_account(self, pod: core_pb2.Pod) -> None:
        namespace, name = pod.metadata.namespace, pod.spec.service_account_name or DEFAULT
        if (namespace, name) in self.accounts:
            return
        if self.stored is not None:  # the copy may lag a write of a moment ago
            stored = await self.stored(self.policy_kind, namespace)
            if any(sa.metadata.name == name for sa in stored):  # type: ignore[attr-defined]
                return
        if name == DEFAULT:
            log.debug('serviceaccount "%s" not found in namespace "%s": pod %s gets no API token', DEFAULT,
                      namespace, pod.metadata.name)
            return
        raise Forbidden(f'pods "{pod.metadata.name}" is forbidden: error looking up service account '
                        f'{namespace}/{name}: serviceaccount "{name}" not found')
