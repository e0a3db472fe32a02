"""Pod DNS: the resolv.conf a pod's sandbox gets, by its dnsPolicy (the kubelet's dns.go).

The kubelet does not write resolv.conf itself: it hands the servers, search
path and options to the runtime in the sandbox config, and containerd writes
the file every container of the pod shares.
"""

from __future__ import annotations

from proto import core_pb2, cri_pb2


def pod_dns(pod: core_pb2.Pod, dns: cri_pb2.DNSConfig, *, cluster_dns: list[str], cluster_domain: str) -> None:
    """Fill `dns` with the pod's resolv.conf, by dnsPolicy, as the kubelet writes it.

    ClusterFirst (the default) points the pod at cluster DNS with Kubernetes' search
    path (`<ns>.svc.<domain> svc.<domain> <domain>`, ndots:5) unless the pod uses the
    host's network; ClusterFirstWithHostNet does so even then; Default leaves the
    node's resolv.conf; None uses only the pod's own dnsConfig, which the others add to.
    """
    # Filled in place rather than returned, so that a pod with nothing to add (Default,
    # no dnsConfig) leaves the sandbox config's dns_config unset rather than empty.
    policy = pod.spec.dns_policy or "ClusterFirst"
    cluster_first = (policy == "ClusterFirst" and not pod.spec.host_network) or policy == "ClusterFirstWithHostNet"
    if cluster_first and cluster_dns:
        dns.servers.extend(cluster_dns)
        dns.searches.extend([f"{pod.metadata.namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}",
                             cluster_domain])
        dns.options.append("ndots:5")
    if pod.spec.HasField("dns_config"):
        own = pod.spec.dns_config
        dns.servers.extend(own.nameservers)
        dns.searches.extend(own.searches)
        dns.options.extend(o.name + (f":{o.value}" if o.HasField("value") else "") for o in own.options)
