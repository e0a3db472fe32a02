"""Admission: the plugins a write passes after authorization (being split into one module per plugin)."""

from controlplane.apiserver.admission.resourcequota import QUOTA_KIND, Admission, quota_status

__all__ = ["QUOTA_KIND", "Admission", "quota_status"]
