"""The connection layer: how distribution connections reach the network (TCP, TLS)."""
