"""Subresources and reviews the HTTP API serves beside plain objects, as pure functions.

- scale.py: `deployments/<name>/scale` and `replicasets/<name>/scale` seen as an
  autoscaling/v1 Scale (`kubectl scale`, the HPA);
- eviction.py: the policy/v1 Eviction `kubectl drain` POSTs to `pods/<name>/eviction`;
- reviews.py: authorization.k8s.io access reviews (`kubectl auth can-i`) and
  authentication.k8s.io identity reviews (`kubectl auth whoami`, TokenReview).

Each takes what the request core (controlplane/apiserver/endpoints.py) already has —
the kind, the stored object, the authoriser, the caller — and returns what to store
or answer; none reads or writes storage itself, so both transports can share them.
"""
