"""kctl get -o jsonpath=TEMPLATE: kubectl's template syntax over what the apiserver returns."""

from __future__ import annotations

import pytest

from kctl import jsonpath
from tests.test_kctl import POD, Kctl, kctl, ns, write  # noqa: F401  (fixtures)

SERVICE = {"kind": "Service", "spec": {"ports": [{"port": 80, "nodePort": 30080}], "clusterIP": "10.96.0.7"}}
PODS = {"kind": "List", "items": [
    {"metadata": {"name": "a", "labels": {"app": "web"}}, "status": {"podIP": "10.244.1.2"}},
    {"metadata": {"name": "b", "labels": {"app": "web"}}, "status": {"podIP": "10.244.2.3"}},
]}


@pytest.mark.parametrize(("template", "data", "expected"), [
    ("{.spec.ports[0].nodePort}", SERVICE, "30080"),
    ("ip={.spec.clusterIP}", SERVICE, "ip=10.96.0.7"),
    ("{.spec.ports[0]}", SERVICE, '{"port": 80, "nodePort": 30080}'),
    ("{.items[*].metadata.name}", PODS, "a b"),
    ('{range .items[*]}{.metadata.name}{"\\t"}{.status.podIP}{"\\n"}{end}', PODS, "a\t10.244.1.2\nb\t10.244.2.3\n"),
    ("{range .items}[{.metadata.name}]{end}", PODS, "[a][b]"),
    ('{"{literal}"}', {}, "{literal}"),
])
def test_templates_render_like_kubectl(template: str, data: object, expected: str) -> None:
    assert jsonpath.render(template, data) == expected


@pytest.mark.parametrize(("template", "message"), [
    ("{.spec", "unclosed action"),
    ("{range .items[*]}{.x}", "{range} without an {end}"),
    ("{end}", "{end} without a {range}"),
    ("{.spec.missing}", "spec.missing is not found"),
    ("{}", "empty action"),
    ("{.spec[}", "cannot parse"),
])
def test_bad_templates_say_what_is_wrong(template: str, message: str) -> None:
    with pytest.raises(jsonpath.TemplateError, match=message.replace("{", r"\{").replace("[", r"\[")):
        jsonpath.render(template, SERVICE)


def test_get_prints_a_field_of_a_pod_and_of_a_list(kctl: Kctl, ns: str, tmp_path) -> None:  # noqa: F811
    assert kctl("apply", "-n", ns, "-f", write(tmp_path / "pod.yaml", POD)).exit_code == 0
    one = kctl("get", "pod", "nginx", "-n", ns, "-o", "jsonpath={.spec.containers[0].image}")
    assert (one.exit_code, one.stdout) == (0, "nginx:1.14.2")
    listed = kctl("get", "pods", "-n", ns, "-o", 'jsonpath={range .items[*]}{.metadata.name}{"\\n"}{end}')
    assert (listed.exit_code, listed.stdout) == (0, "nginx\n")
    missing = kctl("get", "pod", "nginx", "-n", ns, "-o", "jsonpath={.status.nothing}")
    assert missing.exit_code == 1 and "status.nothing is not found" in missing.output
    bad = kctl("get", "pods", "-n", ns, "-o", "jsonpath={.spec")
    assert bad.exit_code != 0 and "unclosed action" in bad.output, bad.output
    unknown = kctl("get", "pods", "-n", ns, "-o", "yml")
    assert unknown.exit_code != 0 and "'yml' is not one of" in unknown.output, unknown.output


def test_filters_select_list_items_as_kubectl_does() -> None:
    # `kubectl get pod x -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}'`: a common one-liner.
    pod = {"status": {"conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "False"}]}}
    assert jsonpath.render('{.status.conditions[?(@.type=="Ready")].status}', pod) == "False"
