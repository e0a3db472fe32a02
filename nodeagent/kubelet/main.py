"""`flotilla-kubelet`: run the node agent for one node.

    flotilla-kubelet --server 127.0.0.1:6443 --node-name node-1 --node-ip 192.168.56.101 \\
        --containerd-socket /var/lib/flotilla/node-1/containerd.sock [--config kubelet.yaml]

The config file (YAML) holds the tunables of nodeagent/kubelet/config.py; the
flags override it. SIGTERM stops the agent and leaves the pods running.

The kubelet takes the common flags from client/component.py but opens its
connection itself (kubelet.py): its server and kubeconfig may come from the
config file, and with --bootstrap-kubeconfig the kubeconfig does not exist until
TLS bootstrap has written it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from client.component import Command, parse_duration
from nodeagent.kubelet import bootstrap
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.diskpressure import parse_eviction_hard
from nodeagent.kubelet.kubelet import Kubelet
from proto.errors import ApiError

log = logging.getLogger("flotilla.kubelet")


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-kubeconfig",
                        help="token kubeconfig (from `kctl join`) used to obtain --kubeconfig when it does not exist")
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--node-ip", required=True, help="the node's address on the cluster network")
    parser.add_argument("--containerd-socket", help="containerd's gRPC socket (CRI)")
    parser.add_argument("--config", help="a YAML file of kubelet settings")
    parser.add_argument("--pod-cidr", help="pod addresses for this node if the Node has no spec.podCIDR")
    parser.add_argument("--port", type=int, help="the kubelet API port (0: any free port)")
    parser.add_argument("--root-dir", help="pod logs and volumes live here")
    parser.add_argument("--no-node-routes", dest="node_routes", action="store_const", const=False,
                        help="keep no routes to other nodes' podCIDRs (the network plugin routes pods)")
    parser.add_argument("--tls-cert-file", help="the kubelet API's serving certificate (PEM; absent: plaintext)")
    parser.add_argument("--tls-private-key-file", help="the kubelet API's serving key (PEM)")
    parser.add_argument("--client-ca-file", help="CA whose client certificates may call the kubelet API")
    parser.add_argument("--image-gc-high-threshold", type=int, metavar="PERCENT",
                        help="image filesystem usage at which unused images are removed (default 85; 100: never)")
    parser.add_argument("--image-gc-low-threshold", type=int, metavar="PERCENT",
                        help="usage image garbage collection frees down to (default 80)")
    parser.add_argument("--eviction-hard", type=eviction_hard_flag, metavar="SIGNAL<VALUE,...",
                        help="DiskPressure thresholds: nodefs.available<10%%,imagefs.available<15%%")
    parser.add_argument("--eviction-minimum-reclaim", type=minimum_reclaim_flag, metavar="SIGNAL=VALUE,...",
                        help="once a threshold is crossed, free this much beyond it: nodefs.available=500Mi")
    parser.add_argument("--eviction-pressure-transition-period", type=parse_duration, metavar="DURATION",
                        help="how long DiskPressure lasts after the last crossing (default 5m)")


def eviction_hard_flag(text: str) -> dict[str, str]:
    """`nodefs.available<10%,imagefs.available<2Gi` as the config's eviction_hard mapping."""
    found = _signal_settings(text, "<", "nodefs.available<10%")
    try:
        parse_eviction_hard(found)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return found


def minimum_reclaim_flag(text: str) -> dict[str, str]:
    """`nodefs.available=500Mi,imagefs.available=2%` as the config's eviction_minimum_reclaim mapping."""
    found = _signal_settings(text, "=", "nodefs.available=500Mi")
    try:
        parse_eviction_hard(dict.fromkeys(found, "0%"), found)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return found


def _signal_settings(text: str, operator: str, example: str) -> dict[str, str]:
    found = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        signal, op, value = part.partition(operator)
        if not op or not signal or not value:
            raise argparse.ArgumentTypeError(f"{part!r}: want SIGNAL{operator}VALUE ({example})")
        found[signal.strip()] = value.strip()
    return found


class TLSBootstrapFailed(Exception):
    """The node has no credentials and could not obtain them with its bootstrap token."""


COMMAND = Command("flotilla-kubelet", __doc__, flags=add_flags, errors=(TLSBootstrapFailed,))


def kubelet_config(opts: argparse.Namespace) -> KubeletConfig:
    """The config file's settings with the flags over them."""
    return KubeletConfig.load(opts.config, server=opts.server, node_name=opts.node_name, node_ip=opts.node_ip,
                              containerd_socket=opts.containerd_socket, pod_cidr=opts.pod_cidr, port=opts.port,
                              root_dir=opts.root_dir, kubeconfig=opts.kubeconfig,
                              bootstrap_kubeconfig=opts.bootstrap_kubeconfig,
                              tls_cert_file=opts.tls_cert_file, tls_private_key_file=opts.tls_private_key_file,
                              client_ca_file=opts.client_ca_file, node_routes=opts.node_routes,
                              image_gc_high_threshold=opts.image_gc_high_threshold,
                              image_gc_low_threshold=opts.image_gc_low_threshold, eviction_hard=opts.eviction_hard,
                              eviction_minimum_reclaim=opts.eviction_minimum_reclaim,
                              eviction_pressure_transition_period=opts.eviction_pressure_transition_period)


def parse_args(argv: list[str] | None = None) -> KubeletConfig:
    return kubelet_config(COMMAND.parse_args(argv))


async def run(opts: argparse.Namespace) -> None:
    config = kubelet_config(opts)
    if config.bootstrap_kubeconfig:
        if not config.kubeconfig:
            raise SystemExit("flotilla-kubelet: --bootstrap-kubeconfig needs --kubeconfig (where to write the "
                             "node's credentials)")
        try:
            await bootstrap.bootstrap_kubeconfig(Path(config.bootstrap_kubeconfig), Path(config.kubeconfig),
                                                 config.node_name)
        except (bootstrap.BootstrapError, ApiError) as exc:
            raise TLSBootstrapFailed(f"TLS bootstrap failed: {exc}") from exc
    try:
        await Kubelet(config).run()
    except asyncio.CancelledError:
        log.info("kubelet stopped; pods keep running")
        raise


def main(argv: list[str] | None = None) -> None:
    COMMAND.run_standalone(run, COMMAND.parse_args(argv))


if __name__ == "__main__":
    main()
