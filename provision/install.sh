#!/usr/bin/env bash
# Install what Flotilla needs on this machine (Debian 12): system packages and a
# Python venv at .venv with Flotilla installed in it (editable, with dev tools).
# Idempotent: running it again only fills in what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(etcd-server etcd-client python3-venv python3-dev
  # the node agent: container runtime, CNI plugins, base image contents, pause built with gcc
  containerd runc containernetworking-plugins busybox-static iproute2 nftables gcc libc6-dev
  # the proxy's LoadBalancer announcer: gratuitous ARP
  iputils-arping
  # the proxy: forget the UDP flows of removed endpoints (conntrack -D)
  conntrack
  # the cluster's image registry on the master (provision/images/registry.py)
  docker-registry
  # the ingress controller's data path on each node (nodeagent/ingress)
  haproxy
  # `kctl image build` (full Dockerfiles) and `kctl image load` (archives into the cluster registry)
  buildah skopeo)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's own docker-registry service would hold port 5000 on every address (with its htpasswd auth);
# each cluster runs its registry under its supervisor instead (provision/images/registry.py).
# Debian's haproxy service likewise: each node's ingress runs its own haproxy.
for service in docker-registry haproxy; do
  if [ -d /run/systemd/system ] && systemctl is-enabled --quiet "$service" 2>/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO systemctl disable --now "$service"
  fi
done

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
echo "flotilla: installed (venv at .venv; etcd $(etcd --version 2>/dev/null | head -1 | awk '{print $3}'))"
