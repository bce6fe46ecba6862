"""The node's asyncio I/O: transports, one channel per peer node, and the manager of them all.

Protocol decisions stay in the sans-IO cores of :mod:`pynode.wire`; what is
here moves bytes between those cores and sockets, and owns the timers.
"""
