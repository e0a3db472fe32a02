"""Real kubectl against the test session's apiserver, over its plaintext HTTP listener.

A fresh, empty kubeconfig and cache per call (the user's ~/.kube is never read);
the test is skipped, saying why, where /usr/bin/kubectl is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

KUBECTL = "/usr/bin/kubectl"


def kubectl(http_url: str, tmp_path: Path, *args: str, stdin: str = "",
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    if not shutil.which(KUBECTL):
        pytest.skip(f"{KUBECTL} is not installed on this machine")
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\n")
    return subprocess.run([KUBECTL, "--kubeconfig", str(config), "--server", http_url, "--cache-dir",
                           str(tmp_path / "cache"), *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)
