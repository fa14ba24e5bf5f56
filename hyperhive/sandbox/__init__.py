"""Each agent's sandbox: what it can see (its filesystem view, its own uid)
and what it can reach. It has its own network namespace, so the model API
(the gateway) and the outside (the egress proxy) are reached only through
unix sockets the daemon serves for that agent."""

__all__: list[str] = []
