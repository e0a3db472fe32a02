#!/usr/bin/env bash
# Host setup for the Vagrant provider (Debian 12, root): Vagrant with vagrant-libvirt,
# libvirt + QEMU, and what `python -m provision box build` needs (debootstrap,
# extlinux, qemu-img). Not part of the default install (CI runs no VMs).
#
#   sudo provision/vagrant_host.sh          # install packages, start libvirt, define the pool
#   sudo provision/vagrant_host.sh stop     # stop the libvirt daemons this script started
#
# Where PID 1 is not systemd (containers, these build machines) the libvirt daemons
# are started by hand and their PIDs kept in /run/flotilla-libvirt.pids so `stop`
# ends exactly those. Idempotent: a second run only fills in what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

POOL="${FLOTILLA_LIBVIRT_POOL:-flotilla}"
POOL_DIR="${FLOTILLA_LIBVIRT_POOL_DIR:-/var/lib/flotilla/libvirt-images}"
PIDS=/run/flotilla-libvirt.pids

if [ "${1:-}" = "stop" ]; then
  [ -f "$PIDS" ] || { echo "no libvirt daemons started by this script"; exit 0; }
  while read -r name pid; do
    kill "$pid" 2>/dev/null && echo "stopped $name ($pid)" || true
  done <"$PIDS"
  rm -f "$PIDS"
  exit 0
fi

# --no-install-recommends: with recommends vagrant-libvirt drags in ~270 packages.
APT_PACKAGES=(vagrant vagrant-libvirt libvirt-daemon-system qemu-system-x86 qemu-utils
  debootstrap extlinux syslinux-common fdisk
  # libvirt's NAT network (Vagrant's management network) hands out addresses with dnsmasq
  dnsmasq-base)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    "${missing[@]}"
fi
# The bootstrap drives the VMs from the host with python-vagrant and Fabric.
if [ -x .venv/bin/python ]; then
  .venv/bin/python -m pip install -q fabric python-vagrant
fi

# KVM works for ordinary guests only with vmx/svm and a /dev/kvm that is not PVM-backed (kvm_pvm):
# the Vagrantfile makes the same test and uses TCG otherwise.
kvm_works() {
  [ -e /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo
}

start() {  # start a libvirt daemon unless one runs already; remember the PID we started
  local name=$1; shift
  if pgrep -x "$name" >/dev/null; then return; fi
  "$@" "/usr/sbin/$name" -d
  sleep 0.5
  echo "$name $(pgrep -nx "$name")" >>"$PIDS"
}
# Where /dev/kvm exists but cannot run guests, libvirt's QEMU capabilities cache never stays valid
# ("KVM usable" yet the probe gets no KVM): it re-probes QEMU on every lookup and `vagrant up`
# stalls minutes in "Updating domain definition". So libvirtd (and the QEMUs it starts) get a
# private mount namespace where /dev/kvm is a file the qemu user cannot open.
MASK=()
if [ -e /dev/kvm ] && ! kvm_works; then
  install -m 000 /dev/null /run/flotilla-no-kvm
  # libvirt copies /dev's mounts into each domain's own /dev namespace and fails on this one: no such namespace.
  grep -q '^namespaces = \[\]' /etc/libvirt/qemu.conf || echo 'namespaces = []' >>/etc/libvirt/qemu.conf
  MASK=(unshare --mount --propagation private sh -c 'mount --bind /run/flotilla-no-kvm /dev/kvm && exec "$@"' sh)
fi
if [ "$(cat /proc/1/comm)" = systemd ]; then
  systemctl start libvirtd virtlogd
else
  start virtlogd; start virtlockd; start libvirtd "${MASK[@]}"
fi
for _ in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done

# vagrant-libvirt wants a storage pool; a fresh libvirt has none named "default".
if ! virsh -c qemu:///system pool-info "$POOL" >/dev/null 2>&1; then
  mkdir -p "$POOL_DIR"
  virsh -c qemu:///system pool-define-as "$POOL" dir --target "$POOL_DIR" >/dev/null
  virsh -c qemu:///system pool-autostart "$POOL" >/dev/null
fi
virsh -c qemu:///system pool-start "$POOL" >/dev/null 2>&1 || true
echo "vagrant host ready: $(vagrant --version), libvirt pool $POOL at $POOL_DIR"
