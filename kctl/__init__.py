"""kctl, the kubectl of Flotilla: a click CLI over the typed client (entry point: kctl.main)."""

import os

# gRPC's C core logs connection events (GOAWAYs, reconnects) to stderr; kctl reports failures itself,
# one line each. Must be set before grpc is first imported.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
