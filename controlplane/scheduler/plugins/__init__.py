"""The scheduler's plugins, one module per plugin as in kube-scheduler's `framework/plugins/`.

Each module declares its `NAME`, the reason strings it reports when it rules a
node out (these appear verbatim in FailedScheduling events), and a class whose
constructor takes the plugin's arguments from the config and the framework
`Handle`. `controlplane.scheduler.registry` maps names to these classes.
"""
