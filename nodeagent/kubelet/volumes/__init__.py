"""Pod volumes on the node: the volume manager (manager.py) and one module per volume type.

`Volumes` is what the pod sync uses; the errors say how a failure reaches the
user (errors.py). See manager.py for the whole story.
"""

from nodeagent.kubelet.volumes.errors import ConfigError, MountError, SetUpError, VolumesNotReady
from nodeagent.kubelet.volumes.manager import Volumes

__all__ = ["ConfigError", "MountError", "SetUpError", "Volumes", "VolumesNotReady"]
