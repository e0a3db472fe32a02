"""Fixtures of the fault suite: its own killable control plane, the slow-test gate and the summary.

The suite replaces the session's `etcd` and `apiserver` fixtures with a
`FaultControlPlane` (support.py), so the shared fixtures built on them
(`client`, `namespace`, the controller manager of tests/controllers_support.py,
the kubelet node of tests/kubelet_support.py) all talk to processes these
tests may SIGKILL. Tests marked `faults_slow` run only with
FLOTILLA_FAULTS_SLOW=1. At the end of the run every fault's line (objects
checked / lost / duplicated, convergence time) is printed again, together,
so it shows in ordinary `tests/run` output.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from provision.processes import ApiServer, Etcd
from tests.faults.support import RESULTS, FaultControlPlane


@pytest.fixture(scope="session")
def fault_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultControlPlane]:
    plane = FaultControlPlane(tmp_path_factory.mktemp("faults"))
    plane.start()
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def etcd(fault_plane: FaultControlPlane) -> Etcd:
    assert fault_plane.etcd is not None
    return fault_plane.etcd


@pytest.fixture(scope="session")
def apiserver(fault_plane: FaultControlPlane) -> ApiServer:
    # The address stays the same across restarts; only the process behind it changes.
    assert fault_plane.apiserver is not None
    return fault_plane.apiserver


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("FLOTILLA_FAULTS_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow fault test: set FLOTILLA_FAULTS_SLOW=1 to run it")
    for item in items:
        if "faults_slow" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section("fault suite")
    for result in RESULTS:
        terminalreporter.write_line(result.line + ("" if result.passed else "  <-- FAILED"))
