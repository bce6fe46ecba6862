"""The fixtures (epmd, epmd_port, cookie, otp, beam, py_node, erl, pynode_node) come from the
pytest plugin ``pynode.testing.plugin``, which the package registers as a ``pytest11`` entry point."""

from agent_support import run_log  # noqa: F401 (a fixture shared by the run tests)
