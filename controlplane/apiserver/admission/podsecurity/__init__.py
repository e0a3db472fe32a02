"""Pod Security admission: Kubernetes' Pod Security Standards, chosen per namespace by its labels.

- policy.py: levels (privileged, baseline, restricted), versions, the
  `pod-security.kubernetes.io/*` labels and the cluster's defaults;
- checks.py: one function per check of the standards, and their order;
- admission.py: the admission plugin (enforce, audit, warn; pods, pod
  templates, namespace relabels).
"""

from controlplane.apiserver.admission.podsecurity.admission import NAME, PodSecurity
from controlplane.apiserver.admission.podsecurity.policy import Defaults, LevelVersion, Policy, Version

__all__ = ["NAME", "Defaults", "LevelVersion", "PodSecurity", "Policy", "Version"]
