"""The bootstrap: the steps that turn a machine into a Flotilla master or worker.

Written once against Invoke's `Context.run` interface, so the same steps run on
this machine (`invoke.Context`, as the tests do against a temporary root) and
over SSH (`fabric.Connection`, for the SSH and Vagrant providers):

    host.py     Host: a machine seen through `run` (idempotent file writes, sudo)
    units.py    systemd units for Flotilla's daemons
    steps.py    install wheels, write config, apply units, join a worker, teardown
    cluster.py  a whole cluster from this host: plan, PKI, wheels, nodes in parallel, images, join, readiness
"""
