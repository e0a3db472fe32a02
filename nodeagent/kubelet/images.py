"""Image pulls: the kubelet's image manager (EnsureImageExists), per imagePullPolicy, with back-off.

Before a container is created its image must be on the node. `Always` pulls
every time (the default for `:latest`), `IfNotPresent` only when missing, `Never`
never. A pull that fails shows as the container's `waiting` reason: the first
failure `ErrImagePull`, the ones after it `ImagePullBackOff`; and like a crashing
container the pull backs off (10 s doubling to 5 min), so syncs in between do not
pull again. Short names ("nginx") try the cluster registry first, so a cluster
without Internet access still runs the usual examples.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from nodeagent.kubelet.backoff import Backoff
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.runtime import CRIError, Runtime
from proto import core_pb2

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


def _tag(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return ""
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


class ImageManager:
    """Pulls each container's image per its policy; remembers failures per (pod uid, container)."""

    def __init__(self, runtime: Runtime, config: KubeletConfig,
                 record: Callable[[core_pb2.Pod, str, str, str], None]) -> None:
        self.runtime = runtime
        self.cluster_registry = config.cluster_registry
        self.record = record
        self.backoff = Backoff(initial=config.backoff_initial, maximum=config.backoff_max,
                               reset=config.backoff_reset)
        self._errors: dict[tuple[str, str], tuple[str, str]] = {}  # -> (reason, message) the status shows
        self._failed_at: dict[tuple[str, str], float] = {}

    async def ensure_image_exists(self, pod: core_pb2.Pod, spec: core_pb2.Container) -> str:
        """The image reference to run `spec` from, pulled if its policy says so; ImageError if it cannot be had."""
        key = (pod.metadata.uid, spec.name)
        waiting = self.backoff.remaining(key, self._failed_at.get(key, 0.0))
        if waiting > 0 and key in self._errors:
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
            self.record(pod, "Warning", "Failed", f"Failed to pull image \"{spec.image}\": {err}")
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
                                 f'container image "{spec.image}" is not present with pull policy of Never')
        last: CRIError | None = None
        self.record(pod, "Normal", "Pulling", f'Pulling image "{spec.image}"')
        started = time.monotonic()
        for name in candidates:
            try:
                await self.runtime.pull_image(name)
            except CRIError as err:
                last = err
                continue
            took = f"{time.monotonic() - started:.3f}s"
            self.record(pod, "Normal", "Pulled", f'Successfully pulled image "{spec.image}" in {took} '
                                                 f"({took} including waiting)")
            return name
        # A locally built image cannot be pulled but may be present: Always means "check", not "fail".
        for name in candidates:
            if await self.runtime.image_present(name):
                return name
        raise ImageError("ErrImagePull", f"pulling {spec.image}: {last.details if last else 'no candidates'}")
