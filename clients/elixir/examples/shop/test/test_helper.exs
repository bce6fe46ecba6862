# The Python node for the tests (and the app): $PYNODE_CMD, by default this checkout's. An app of
# your own points it at the virtualenv `mix pynode.setup` made, such as .pynode/venv/bin/pynode.
cmd = System.get_env("PYNODE_CMD") || Path.expand("../../../../../.venv/bin/pynode", __DIR__)
File.exists?(cmd) || raise "the Python node #{cmd} is missing: set $PYNODE_CMD"
System.put_env("PYNODE_CMD", cmd)

ExUnit.start(capture_log: true)
