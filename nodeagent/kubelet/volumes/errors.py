"""The ways a pod's volumes fail, each with the words Kubernetes shows for it.

Two kinds of failure reach the user differently, as in Kubernetes:

- `SetUpError`: a volume cannot be provided (its ConfigMap is missing, a hostPath
  is not what its `type` says, the kubelet has no plugin for it). The volume
  manager wraps it in a `MountError` naming the volume, the pod records a
  `FailedMount` event (`MountVolume.SetUp failed for volume "data" : ...`) and
  stays Pending, its containers `ContainerCreating`, until the volume can be set up;
- `ConfigError`: a container's own configuration cannot be built (an env var's
  ConfigMap key is missing, a subPath leaves its volume). That container waits
  with reason `CreateContainerConfigError`.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A ConfigMap, Secret, key or subPath a container needs is unusable (CreateContainerConfigError)."""

    reason = "CreateContainerConfigError"


class SetUpError(Exception):
    """One volume cannot be set up; the message is the cause, in Kubernetes' words."""


class MountError(Exception):
    """A volume of the pod that could not be set up, named as the FailedMount event names it."""

    def __init__(self, volume: str, cause: str) -> None:
        super().__init__(f'MountVolume.SetUp failed for volume "{volume}" : {cause}')
        self.volume = volume
        self.cause = cause


class VolumesNotReady(Exception):
    """Some of the volumes the pod's containers mount could not be set up: the pod may not start."""

    def __init__(self, failures: list[MountError], volumes: list[str]) -> None:
        super().__init__("; ".join(str(f) for f in failures))
        self.failures = failures
        self.volumes = volumes  # every volume the pod's containers mount, in spec order

    def timeout_message(self) -> str:
        """What the kubelet says when the pod has waited its whole mount timeout (WaitForAttachAndMount)."""
        unmounted = " ".join(sorted(f.volume for f in self.failures))
        unattached = " ".join(self.volumes)
        return (f"Unable to attach or mount volumes: unmounted volumes=[{unmounted}], "
                f"unattached volumes=[{unattached}]: timed out waiting for the condition")
