"""`flotilla-kubelet`: run the node agent for one node.

    flotilla-kubelet --server 127.0.0.1:6443 --node-name node-1 --node-ip 192.168.56.101 \\
        --containerd-socket /var/lib/flotilla/node-1/containerd.sock [--config kubelet.yaml]

The config file (YAML) holds the tunables of nodeagent/kubelet/config.py; the
flags override it. SIGTERM stops the agent and leaves the pods running.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from nodeagent.kubelet import bootstrap
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.kubelet import Kubelet
from proto.errors import ApiError


def parse_args(argv: list[str] | None = None) -> KubeletConfig:
    parser = argparse.ArgumentParser(prog="flotilla-kubelet", description=__doc__.split("\n")[0])
    parser.add_argument("--server", help="the apiserver, HOST:PORT")
    parser.add_argument("--kubeconfig", help="kubeconfig with the CA and the node's credentials (TLS apiserver)")
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
    parser.add_argument("-v", "--verbose", action="store_true")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if opts.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return KubeletConfig.load(opts.config, server=opts.server, node_name=opts.node_name, node_ip=opts.node_ip,
                              containerd_socket=opts.containerd_socket, pod_cidr=opts.pod_cidr, port=opts.port,
                              root_dir=opts.root_dir, kubeconfig=opts.kubeconfig,
                              bootstrap_kubeconfig=opts.bootstrap_kubeconfig,
                              tls_cert_file=opts.tls_cert_file, tls_private_key_file=opts.tls_private_key_file,
                              client_ca_file=opts.client_ca_file, node_routes=opts.node_routes)


async def _main(config: KubeletConfig) -> None:
    if config.bootstrap_kubeconfig:
        if not config.kubeconfig:
            raise SystemExit("flotilla-kubelet: --bootstrap-kubeconfig needs --kubeconfig (where to write the "
                             "node's credentials)")
        try:
            await bootstrap.bootstrap_kubeconfig(Path(config.bootstrap_kubeconfig), Path(config.kubeconfig),
                                                 config.node_name)
        except (bootstrap.BootstrapError, ApiError) as exc:
            raise SystemExit(f"flotilla-kubelet: TLS bootstrap failed: {exc}") from None
    task = asyncio.create_task(Kubelet(config).run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        logging.getLogger(__name__).info("kubelet stopped; pods keep running")


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    asyncio.run(_main(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
