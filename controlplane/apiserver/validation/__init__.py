"""Validation: the apiserver's last word on whether an object may be stored, one module per API group.

Every write — create, update, and the status and binding subresources — passes
through its kind's strategy (strategies/), which checks the object with the
functions here after defaulting and before anything reaches etcd. They return
(field path, message) pairs; an empty list means the object is valid. The
apiserver raises `proto.errors.Invalid` with the pairs, which travels to clients
as INVALID_ARGUMENT and prints as kubectl prints it:

    Pod "web" is invalid: spec.containers[0].ports[0].containerPort: Invalid value: 70000:
    must be between 1 and 65535, inclusive

Paths use Kubernetes' JSON names and indexes, and messages follow
k8s.io/apimachinery's field.Error bodies (field.py), so what a user reads here is
what they would search for. The layout follows kube-apiserver's:

- field.py: the error bodies and generic checks;
- meta.py: names, labels, selectors and ObjectMeta (apimachinery's validation);
- podspec.py: the pod spec, shared by Pods and the workload templates;
- core.py, apps.py, coordination.py, autoscaling.py, rbac.py, certificates.py:
  one function per kind of that API group, taking the new object and the stored
  one (None on create); on update it also enforces what may not change.
"""
