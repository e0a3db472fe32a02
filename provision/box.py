"""The Vagrant base box for Flotilla's VM clusters, built here from Debian packages.

No box can be downloaded on these machines, so `python -m provision box build`
makes one: debootstrap a Debian 12 root file system with everything a node
needs baked in (etcd, containerd, runc, CNI plugins, nftables, python3-venv,
Debian's docker-registry, busybox...), so guests never run apt at boot; make it
bootable (cloud kernel, a small initramfs with the virtio modules, extlinux);
turn it into a qcow2 disk and a libvirt box; `vagrant box add` it.

Traps handled (docs/vagrant-hosts.md says why each matters):
- /etc/machine-id is left empty (and /var/lib/dbus/machine-id points at it):
  otherwise every clone has the same machine-id, hence the same DHCP client
  id and IP address, and vagrant-libvirt drops the "duplicate" domains;
- the SSH host keys debootstrap made are removed: a first-boot unit makes only
  an ed25519 key (`ssh-keygen -A` costs 19 s under TCG);
- systemd-networkd with DHCP on eth0 (Vagrant's Debian guest plugin then
  configures the private network through networkd too); wait-online masked;
- the daemons Debian enables on install (etcd, docker-registry, containerd)
  are disabled: the bootstrap starts them with the cluster's own settings.

The build is cached: the box is skipped when it is already added and the
recipe's hash (this module's source) is the one recorded at the last build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

BOX_NAME = "flotilla/debian12"
SUITE = "bookworm"
ROOT_LABEL = "flotilla-root"
DISK_GIB = 8
# What a node runs, installed once here so guests need no apt at boot.
NODE_PACKAGES = (
    "etcd-server", "etcd-client", "containerd", "runc", "containernetworking-plugins", "nftables", "iproute2",
    "python3", "python3-venv", "docker-registry", "busybox-static", "conntrack", "iputils-arping",
    "nfs-common", "nfs-kernel-server",  # the `nfs` StorageClass: the master exports, every node mounts
)
# What makes the root file system a bootable, SSH-able Vagrant guest. dbus must be named explicitly.
BASE_PACKAGES = (
    "systemd-sysv", "udev", "linux-image-cloud-amd64", "openssh-server", "sudo", "netbase", "dbus",
    "systemd-resolved", "rsync", "ca-certificates", "procps", "kmod", "less",
)
# Started by the bootstrap with the cluster's settings, not by the box at boot.
DISABLED_UNITS = ("etcd.service", "docker-registry.service", "containerd.service", "nfs-server.service")
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "virtio_console", "ext4", "sd_mod",
                     "ata_piix", "ahci")
INSECURE_KEY_PATHS = ("/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub",
                      "/opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub")
HOSTKEY_UNIT = """[Unit]
Description=Make this clone's own SSH host key (ed25519 only: ssh-keygen -A is slow under emulation)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=multi-user.target
"""
BOX_VAGRANTFILE = """Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.disk_bus = "virtio"
  end
end
"""

console = Console(stderr=True)


class BoxError(RuntimeError):
    """The box could not be built or added (the message names the step)."""


def recipe_hash() -> str:
    """Changes whenever the recipe (this module) does: the cache key of a built box."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("FLOTILLA_HOME", Path.home() / ".flotilla")) / "box"


def _run(*argv: str, step: str, timeout: float = 900, **kwargs: object) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BoxError(f"{step}: {' '.join(argv[:3])}... exited {done.returncode}: {' | '.join(tail)}")
    return str(done.stdout)


def host_mirror() -> str:
    """The Debian mirror the host's apt uses (guests and debootstrap use the same one)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                words = line.split()
                uris = [w for w in words if w.startswith("http") and w.rstrip("/").endswith("/debian")]
                if uris and (line.startswith("deb ") or line.startswith("URIs:")):
                    return uris[0]
    raise BoxError("no Debian mirror (…/debian) in the host's apt sources: pass --mirror")


def insecure_public_key() -> str:
    """Vagrant's well-known insecure key: the box's vagrant user trusts it (config.ssh.insert_key = false)."""
    for pattern in INSECURE_KEY_PATHS:
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found:
            return found[-1].read_text().strip()
    raise BoxError("Vagrant's keys/vagrant.pub not found: install vagrant (provision/vagrant_host.sh)")


def box_added(name: str = BOX_NAME) -> bool:
    out = subprocess.run(["vagrant", "box", "list", "--machine-readable"], capture_output=True, text=True,
                         timeout=120).stdout
    return any(line.split(",")[2:4] == ["box-name", name] for line in out.splitlines() if line.count(",") >= 3)


def _write(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def configure_rootfs(root: Path, *, hostname: str = "flotilla") -> None:
    """Turn a debootstrapped tree into a Vagrant guest (see the module docstring for why each piece)."""
    _write(root, "/etc/hostname", hostname + "\n")
    _write(root, "/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {hostname}\n")
    _write(root, "/etc/fstab", f"LABEL={ROOT_LABEL} / ext4 errors=remount-ro 0 1\n")
    # An empty machine-id: systemd makes a fresh one on each clone's first boot.
    _write(root, "/etc/machine-id", "")
    dbus_id = root / "var/lib/dbus/machine-id"
    dbus_id.parent.mkdir(parents=True, exist_ok=True)
    dbus_id.unlink(missing_ok=True)
    dbus_id.symlink_to("/etc/machine-id")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _write(root, "/etc/systemd/system/flotilla-ssh-hostkey.service", HOSTKEY_UNIT)
    _write(root, "/etc/ssh/sshd_config.d/flotilla.conf", "HostKey /etc/ssh/ssh_host_ed25519_key\nUseDNS no\n")
    _write(root, "/etc/systemd/network/10-eth0.network", "[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n")
    _write(root, "/etc/sudoers.d/vagrant", "vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n", 0o440)
    _write(root, "/etc/initramfs-tools/conf.d/flotilla", "MODULES=list\nCOMPRESS=gzip\n")
    _write(root, "/etc/initramfs-tools/modules", "\n".join(INITRAMFS_MODULES) + "\n")
    # Containers need these at boot (bridge CNI, kube-proxy-style nftables on bridged traffic).
    _write(root, "/etc/modules-load.d/flotilla.conf", "overlay\nbr_netfilter\nbridge\nveth\n")
    _write(root, "/etc/sysctl.d/90-flotilla.conf", "net.ipv4.ip_forward = 1\n")
    chroot = ("chroot", str(root))
    _run(*chroot, "useradd", "-m", "-s", "/bin/bash", "-G", "sudo", "vagrant", step="vagrant user")
    _run(*chroot, "sh", "-c", "echo vagrant:vagrant | chpasswd", step="vagrant password")
    _write(root, "/home/vagrant/.ssh/authorized_keys", insecure_public_key() + "\n", 0o600)
    _run(*chroot, "chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh", step="vagrant ssh")
    (root / "home/vagrant/.ssh").chmod(0o700)
    _run(*chroot, "systemctl", "enable", "systemd-networkd", "systemd-resolved", "flotilla-ssh-hostkey",
         step="enable units")
    _run(*chroot, "systemctl", "mask", "systemd-networkd-wait-online.service", step="mask wait-online")
    _run(*chroot, "systemctl", "disable", *DISABLED_UNITS, step="disable daemons")
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.symlink_to("/run/systemd/resolve/stub-resolv.conf")
    _run(*chroot, "update-initramfs", "-u", "-k", "all", step="initramfs")
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise BoxError("no kernel/initrd in /boot: is linux-image-cloud-amd64 in the package list?")
    _write(root, "/boot/extlinux/extlinux.conf",
           f"DEFAULT linux\nTIMEOUT 1\nPROMPT 0\nLABEL linux\n  KERNEL /boot/{kernels[-1].name}\n"
           f"  APPEND initrd=/boot/{initrds[-1].name} root=LABEL={ROOT_LABEL} rw console=ttyS0 net.ifnames=0 quiet\n")
    # Nothing of the build host's apt state belongs in the box.
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def _loop_mount(image: Path, mountpoint: Path) -> Iterator[str]:
    # The host kernel does not scan MBR partitions (losetup -P finds nothing): map the partition by offset.
    loop = _run("losetup", "--find", "--show", "-o", str(1024 * 1024), str(image), step="losetup").strip()
    try:
        yield loop
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["umount", str(mountpoint)], capture_output=True, timeout=60)
        subprocess.run(["losetup", "-d", loop], capture_output=True, timeout=60)


def make_disk(root: Path, qcow2: Path, work: Path) -> None:
    """One bootable ext4 partition holding `root`, with extlinux, as a qcow2 image."""
    raw = work / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(DISK_GIB * 1024**3)
    _run("sfdisk", "-q", str(raw), input="start=2048, type=83, bootable\n", step="partition")
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    with _loop_mount(raw, mnt) as loop:
        _run("mkfs.ext4", "-q", "-L", ROOT_LABEL, loop, step="mkfs")
        _run("mount", loop, str(mnt), step="mount")
        _run("cp", "-a", f"{root}/.", str(mnt), step="copy rootfs")
        _run("extlinux", "--install", str(mnt / "boot/extlinux"), step="extlinux")
        _run("umount", str(mnt), step="umount")
    mbr = Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()
    with raw.open("r+b") as f:
        f.write(mbr[:440])  # boot code only: the partition table after byte 440 stays
    _run("qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2), step="qemu-img convert")
    raw.unlink()


def package_box(qcow2: Path, out: Path) -> None:
    metadata = json.dumps({"provider": "libvirt", "format": "qcow2", "virtual_size": DISK_GIB})
    work = qcow2.parent
    (work / "metadata.json").write_text(metadata)
    (work / "Vagrantfile").write_text(BOX_VAGRANTFILE)
    with tarfile.open(out, "w") as tar:  # qcow2 is already compact; gzip would cost a minute for little
        tar.add(work / "metadata.json", "metadata.json")
        tar.add(work / "Vagrantfile", "Vagrantfile")
        tar.add(qcow2, "box.img")


def drop_pool_copies(name: str, pool: str = "") -> None:
    """Delete vagrant-libvirt's uploaded copy of an older box, or the next `vagrant up` would reuse it."""
    pool = pool or os.environ.get("FLOTILLA_LIBVIRT_POOL", "flotilla")
    prefix = name.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image"
    listing = subprocess.run(["virsh", "-c", "qemu:///system", "vol-list", pool], capture_output=True, text=True,
                             timeout=60).stdout
    for line in listing.splitlines():
        words = line.split()
        if words and words[0].startswith(prefix):
            subprocess.run(["virsh", "-c", "qemu:///system", "vol-delete", "--pool", pool, words[0]],
                           capture_output=True, timeout=60)


def build(*, name: str = BOX_NAME, mirror: str | None = None, force: bool = False) -> Path | None:
    """Build and add the box unless the cached one matches the recipe. Returns the .box file (None: cached)."""
    if os.geteuid() != 0:
        raise BoxError("building the box needs root (debootstrap, loop devices, mount)")
    for tool in ("debootstrap", "extlinux", "qemu-img", "sfdisk", "losetup", "vagrant"):
        if shutil.which(tool) is None:
            raise BoxError(f"{tool} is not installed: run provision/vagrant_host.sh")
    stamp = cache_dir() / f"{name.replace('/', '-')}.recipe"
    if not force and stamp.exists() and stamp.read_text() == recipe_hash() and box_added(name):
        console.print(f"box {name}: up to date (recipe {recipe_hash()})")
        return None
    mirror = mirror or host_mirror()
    cache_dir().mkdir(parents=True, exist_ok=True)
    out = cache_dir() / f"{name.replace('/', '-')}.box"
    with tempfile.TemporaryDirectory(prefix="flotilla-box-", dir="/var/tmp") as tmp, Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
    ) as progress:
        work = Path(tmp)
        root = work / "rootfs"

        def phase(description: str) -> TaskID:
            return progress.add_task(description, total=1)

        task = phase(f"debootstrap {SUITE} ({len(BASE_PACKAGES) + len(NODE_PACKAGES)} packages + deps)")
        _run("debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES + NODE_PACKAGES)}", SUITE,
             str(root), mirror, step="debootstrap", timeout=1800)
        progress.update(task, completed=1)
        task = phase("configure guest (vagrant user, machine-id, networkd, initramfs, extlinux)")
        configure_rootfs(root)
        progress.update(task, completed=1)
        task = phase(f"disk image ({DISK_GIB} GiB qcow2)")
        qcow2 = work / "box.img"
        make_disk(root, qcow2, work)
        progress.update(task, completed=1)
        task = phase("package box")
        package_box(qcow2, out)
        progress.update(task, completed=1)
        task = phase(f"vagrant box add {name}")
        _run("vagrant", "box", "add", "--force", "--name", name, str(out), step="vagrant box add")
        drop_pool_copies(name)
        progress.update(task, completed=1)
    stamp.write_text(recipe_hash())
    console.print(f"box {name}: built and added ({out.stat().st_size // 2**20} MiB, recipe {recipe_hash()})")
    return out
