"""Cluster DNS (kube-dns / CoreDNS's kubernetes plugin): Service names answered from the API.

`resolver` decides answers (pure), `server` speaks DNS over UDP and TCP, `main`
is the `flotilla-dns` daemon.
"""
