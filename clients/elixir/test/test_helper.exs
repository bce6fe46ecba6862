# The library's tests run against the repo's real Python node (.venv/bin/pynode), which the
# library starts itself. Distribution needs an epmd: scripts/test_elixir starts a private one on a
# free port and sets ERL_EPMD_PORT before this VM starts (the VM reads it only at start).
_ = Pynode.TestSupport.pynode_cmd()

unless System.get_env("ERL_EPMD_PORT") do
  raise "ERL_EPMD_PORT is not set: run the tests with scripts/test_elixir, which starts a private epmd"
end

ExUnit.start(capture_log: true, timeout: 300_000)
