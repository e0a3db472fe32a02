"""Image pulls: the kubelet's image manager (EnsureImageExists), per imagePullPolicy, with back-off.

Before a container is created its image must be on the node. `Always` pulls
every time (the default for `:latest`), `IfNotPresent` only when missing, `Never`
never. A pull that fails shows as the container's `waiting` reason: the first
failure `ErrImagePull`, the ones after it `ImagePullBackOff`; and like a crashing
container the pull backs off (10 s doubling to 5 min), so syncs in between do not
pull again. Short names ("nginx") try the cluster registry first, so a cluster
without Internet access still runs the usual examples.

Pulls carry the pod's imagePullSecrets (nodeagent/kubelet/credentials.py): each
credential for the image's registry in turn, then none. A failed pull is told in
one line that says why and what to do (`pull_failure`): an image missing from
an offline cluster's registry names `kctl image load`; a registry asking for
credentials names imagePullSecrets; a missing tag says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from nodeagent.kubelet import credentials
from nodeagent.kubelet.backoff import Backoff
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.runtime import CRIError, Runtime
from proto import core_pb2, cri_pb2

log = logging.getLogger(__name__)


class ImageError(Exception):
    """The container's image cannot be had; `reason` is what its status shows (ErrImagePull, ...).

    `retry_after` is how long until the next pull may be tried (0: at the next sync).
    """

    def __init__(self, reason: str, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


def image_candidates(image: str, cluster_registry: str) -> list[str]:
    """The references to try for `image`: short names ("nginx") the cluster registry first, then docker.io's rules."""
    first = image.split("/", 1)[0]
    registry_given = "/" in image and ("." in first or ":" in first or first == "localhost")
    if registry_given or not cluster_registry:
        return [image]
    # docker.io's layout, which the cluster registry keeps: official images ("nginx") live under library/.
    path = image if "/" in image else f"library/{image}"
    return [f"{cluster_registry}/{path}", image]


def pull_failure(image: str, details: str, *, offline: bool, cluster_registry: str, authenticated: bool) -> str:
    """The one line a failed pull of `image` shows (status message and event): why, and what to do.

    `details` is containerd's error; `authenticated`: the pod gave credentials for the image's registry.
    """
    lowered = details.lower()
    registry = credentials.registry_of(image)
    in_cluster_registry = registry == "docker.io" or registry == cluster_registry
    if "401" in lowered or "unauthorized" in lowered or "authoriz" in lowered or "403" in lowered:
        if authenticated:
            return (f'image "{image}": registry {registry} refused the credentials of the pod\'s imagePullSecrets '
                    "(authentication failed)")
        return (f'image "{image}": registry {registry} requires authentication and the pod has no imagePullSecret '
                f"for it: kctl create secret docker-registry NAME --docker-server={registry} --docker-username=U "
                "--docker-password=P, then list it in the pod's imagePullSecrets")
    if "not found" in lowered or "manifest unknown" in lowered or "name unknown" in lowered:
        if offline and in_cluster_registry:
            return (f'image "{image}" is not in the cluster registry and the cluster is offline; '
                    "load it with: kctl image load <archive> (or build it with kctl image build)")
        if in_cluster_registry and cluster_registry:
            return (f'image "{image}" not found: neither the cluster registry nor Docker Hub has it '
                    "(no such repository or tag; kctl image load <archive> adds it to the cluster registry)")
        return f'image "{image}" not found in registry {registry}: no such repository or tag'
    if any(w in lowered for w in ("connection refused", "no route", "i/o timeout", "dial tcp", "no such host",
                                  "network is unreachable", "deadline exceeded")):
        why = " (the cluster is offline: its nodes reach only the cluster registry)" if offline else ""
        return f'image "{image}": registry {registry} cannot be reached{why}: {details}'
    return f'image "{image}": {details}'


def _tag(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return ""
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


class ImageManager:
    """Pulls each container's image per its policy; remembers failures per (pod uid, container)."""

    def __init__(self, runtime: Runtime, config: KubeletConfig,
                 record: Callable[[core_pb2.Pod, str, str, str], None],
                 secret: Callable[[str, str], Awaitable[dict[str, bytes]]] | None = None) -> None:
        self.runtime = runtime
        self.cluster_registry = config.cluster_registry
        self.offline = config.registry_offline
        self.record = record
        # (namespace, name) -> a Secret's data ({} when it is missing): the pod's imagePullSecrets.
        self.secret = secret
        self.backoff = Backoff(initial=config.backoff_initial, maximum=config.backoff_max,
                               reset=config.backoff_reset)
        self._errors: dict[tuple[str, str], tuple[str, str]] = {}  # -> (reason, message) the status shows
        self._failed_at: dict[tuple[str, str], float] = {}

    async def ensure_image_exists(self, pod: core_pb2.Pod, spec: core_pb2.Container) -> str:
        """The image reference to run `spec` from, pulled if its policy says so; ImageError if it cannot be had."""
        key = (pod.metadata.uid, spec.name)
        waiting = self.backoff.remaining(key, self._failed_at.get(key, 0.0))
        if waiting > 0 and key in self._errors:
            self.record(pod, "Normal", "BackOff", f'Back-off pulling image "{spec.image}"')
            raise ImageError("ImagePullBackOff", f'Back-off pulling image "{spec.image}"', retry_after=waiting)
        try:
            image = await self._pull_per_policy(pod, spec)
        except ImageError as err:
            # The first failure shows ErrImagePull, the retries after it ImagePullBackOff.
            reason = err.reason
            if reason == "ErrImagePull" and key in self._errors:
                reason = "ImagePullBackOff"
            self._errors[key] = (reason, str(err))
            self._failed_at[key] = time.time()
            self.backoff.next(key, time.time())
            log.warning("image %s for %s/%s: %s", spec.image, pod.metadata.name, spec.name, err)
            if err.reason == "ErrImagePull":
                self.record(pod, "Warning", "Failed", f"Failed to pull image \"{spec.image}\": {err}")
            self.record(pod, "Warning", "Failed", f"Error: {err.reason}")
            raise ImageError(reason, str(err), retry_after=self.backoff.delay(key)) from None
        self._errors.pop(key, None)
        return image

    def pull_error(self, uid: str, container: str) -> tuple[str, str] | None:
        """The (reason, message) a container waits with because its image could not be pulled."""
        return self._errors.get((uid, container))

    def forget_pod(self, uid: str) -> None:
        self.backoff.forget_pod(uid)
        for key in [k for k in self._errors if k[0] == uid]:
            del self._errors[key]
        for key in [k for k in self._failed_at if k[0] == uid]:
            del self._failed_at[key]

    async def _pull_per_policy(self, pod: core_pb2.Pod, spec: core_pb2.Container) -> str:
        """The image to run, pulled if the policy says so; the events are Kubernetes' (Pulling, Pulled)."""
        policy = spec.image_pull_policy or ("Always" if _tag(spec.image) == "latest" else "IfNotPresent")
        candidates = image_candidates(spec.image, self.cluster_registry)
        if policy != "Always":
            for name in candidates:
                if await self.runtime.image_present(name):
                    self.record(pod, "Normal", "Pulled", f'Container image "{spec.image}" already present on machine')
                    return name
            if policy == "Never":
                raise ImageError("ErrImageNeverPull",
                                 f'Container image "{spec.image}" is not present with pull policy of Never')
        last: CRIError | None = None
        auths = await self._pull_secrets(pod)
        self.record(pod, "Normal", "Pulling", f'Pulling image "{spec.image}"')
        started = time.monotonic()
        authenticated = False
        for name in candidates:
            offered = credentials.matching(auths, name)
            authenticated = authenticated or bool(offered)
            pulled = False
            for auth in [*offered, None]:
                try:
                    await self.runtime.pull_image(name, auth)
                except CRIError as err:
                    last = err
                    continue
                pulled = True
                break
            if not pulled:
                continue
            took = f"{time.monotonic() - started:.3f}s"
            self.record(pod, "Normal", "Pulled", f'Successfully pulled image "{spec.image}" in {took} '
                                                 f"({took} including waiting)")
            return name
        # A locally built image cannot be pulled but may be present: Always means "check", not "fail".
        for name in candidates:
            if await self.runtime.image_present(name):
                return name
        raise ImageError("ErrImagePull", pull_failure(spec.image, last.details if last else "no candidates",
                                                      offline=self.offline, cluster_registry=self.cluster_registry,
                                                      authenticated=authenticated))

    async def _pull_secrets(self, pod: core_pb2.Pod) -> list[dict[str, cri_pb2.AuthConfig]]:
        """The credentials of the pod's imagePullSecrets; a missing or malformed one is skipped with a
        warning, as the kubelet does ("Unable to retrieve some image pull secrets")."""
        found = []
        for ref in pod.spec.image_pull_secrets:
            data = await self.secret(pod.metadata.namespace, ref.name) if self.secret else {}
            if not data:
                self.record(pod, "Warning", "FailedToRetrieveImagePullSecret",
                            f'Unable to retrieve some image pull secrets ({ref.name}); attempting to pull the image '
                            "may not succeed.")
                continue
            try:
                found.append(credentials.auths_of(ref.name, data))
            except credentials.CredentialError as err:
                self.record(pod, "Warning", "FailedToRetrieveImagePullSecret", str(err))
        return found
