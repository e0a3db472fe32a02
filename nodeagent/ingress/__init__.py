"""The ingress agent: each node's haproxy, configured from Ingresses (Flotilla's built-in ingress controller).

routes.py decides what is served (pure), config.py renders haproxy's files
(pure), haproxy.py runs and reloads haproxy, agent.py is the control loop; the
node's proxy daemon (nodeagent/proxy/main.py) runs the agent beside its own.
"""
