"""The controller manager: the control loops that turn desired state into actual state.

Each module is one controller in sample-controller's shape (`base.Controller`):
informer handlers put keys on a work queue, a few workers call `sync(key)`,
which reads the informer caches, converges the world through the API, and
writes status. `main.py` wires them to one shared `InformerFactory` and runs
them only while this process holds the leader Lease (`leaderelection.py`).
"""
