"""LoadBalancer Services without a cloud: addresses from a configured pool (MetalLB-style).

`pool` parses the pool and picks addresses (pure), `controller` writes them to
each LoadBalancer Service's status.loadBalancer.ingress (the controller manager
runs it as `service-lb` with `--lb-pool`), `main` is the standalone
`flotilla-lb-controller` daemon. Every node's proxy then DNATs the address like
a ClusterIP.
"""
