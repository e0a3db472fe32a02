"""Subresources and reviews the HTTP API serves beside plain objects, as pure functions.

- scale.py: `deployments/<name>/scale` and `replicasets/<name>/scale` seen as an
  autoscaling/v1 Scale (`kubectl scale`, the HPA);
- eviction.py: the policy/v1 Eviction `kubectl drain` POSTs to `pods/<name>/eviction`;
- reviews.py: authorization.k8s.io access reviews (`kubectl auth can-i`) and
  authentication.k8s.io identity reviews (`kubectl auth whoami`, TokenReview).

Each takes what the request core (controlplane/apiserver/endpoints.py) already has —
the kind, the stored object, the authoriser, the caller — and returns what to store
or answer, so both transports share them. Scale and the reviews are pure functions;
eviction alone reads and writes (the pod, its PodDisruptionBudget's status, the
delete), always through the apiserver's registry with the evicting caller's
attributes, so defaulting, validation, admission and resourceVersion checks apply
as to any write. The request core authorises it once, as `create pods/eviction`;
the gRPC Evict call and `POST pods/<name>/eviction` both come through there.
"""
