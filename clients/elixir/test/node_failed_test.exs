defmodule Pynode.NodeFailedTest do
  # A node that cannot start, the same way each time, is not restarted for ever: the cause is
  # logged at :error in the node's own words and await_ready/2 returns it.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Pynode.TestSupport

  test "a bad --models file stops the restarts and await_ready says why" do
    missing =
      Path.join(
        System.tmp_dir!(),
        "pynode-no-such-models-#{System.unique_integer([:positive])}.toml"
      )

    start = [cmd: pynode_cmd(), args: ["--agents", agents_dir(), "--models", missing]]

    log =
      capture_log(fn ->
        start_supervised!(
          {Pynode,
           name: NodeFailedTest.Py,
           node: unique_node("failing"),
           start: start,
           backoff_initial: 50}
        )

        assert {:error, {:node_failed, message}} = Pynode.await_ready(NodeFailedTest.Py, 60_000)
        assert message =~ "--models #{missing}"
        assert Pynode.os_pid(NodeFailedTest.Py) == nil
        # Given up: no fourth start, however long one waits for it.
        Process.sleep(500)
        assert Pynode.os_pid(NodeFailedTest.Py) == nil
        assert {:error, {:node_failed, ^message}} = Pynode.await_ready(NodeFailedTest.Py, 1_000)
      end)

    assert length(Regex.scan(~r/pynode: started /, log)) == 3
    assert log =~ "[error] pynode: the Python node"
    assert log =~ "(3 times in a row); not restarting it"
  end

  test "a node that exits after it was connected is restarted as before" do
    start_supervised!(
      {Pynode,
       name: NodeFailedTest.Up,
       node: unique_node("restarted"),
       start: start_opts(),
       backoff_initial: 50}
    )

    :ok = Pynode.await_ready(NodeFailedTest.Up, 60_000)
    first = Pynode.os_pid(NodeFailedTest.Up)
    System.cmd("kill", ["-9", "#{first}"])

    assert eventually(fn ->
             Pynode.await_ready(NodeFailedTest.Up, 1_000) == :ok and
               Pynode.os_pid(NodeFailedTest.Up) not in [nil, first]
           end)
  end
end
