defmodule Pynode.RestartTest do
  # The node goes away and comes back: kill -9 mid-run, reconnecting, restarting, stopping.
  use ExUnit.Case, async: false

  import Pynode.TestSupport
  alias Pynode.{Error, Result}

  defmodule BlockingTool do
    # An agent's {M, F} tool: while :pynode_test_block is set it tells the test and waits.
    def wait(_args) do
      if :persistent_term.get(:pynode_test_block, false) do
        send(:pynode_restart_test, :in_tool)
        Process.sleep(:infinity)
      end

      "free"
    end
  end

  test "kill -9 mid-run: the run ends :nodedown, the node is restarted, the agent re-created, the next run succeeds" do
    Process.register(self(), :pynode_restart_test)
    node = unique_node("restart")
    opts = [name: RestartTest.Py, node: node, start: start_opts(), backoff_initial: 200]
    start_supervised!({Pynode, opts})
    # A second child that only connects to the same node: it must reconnect by itself.
    start_supervised!({Pynode, name: RestartTest.Remote, node: node, backoff_initial: 200})

    start_supervised!(
      {Pynode.Agent,
       pynode: RestartTest.Py,
       name: :restart_agent,
       spec: %{model: "test"},
       tools: [Pynode.Tool.new(name: "wait", fun: &BlockingTool.wait/1)]}
    )

    :ok = Pynode.subscribe(RestartTest.Py)
    assert_receive {:pynode, :up, ^node}, 60_000
    :ok = Pynode.subscribe(RestartTest.Remote)
    assert_receive {:pynode, :up, ^node}, 60_000
    :ok = Pynode.Agent.await_ready(:restart_agent, 60_000)
    assert {:ok, %Result{output: output}} = Pynode.run(:restart_agent, "Go")
    assert output =~ "free"

    :persistent_term.put(:pynode_test_block, true)
    first_os_pid = Pynode.os_pid(RestartTest.Py)
    run = Task.async(fn -> Pynode.run(:restart_agent, "Go", timeout: 120_000) end)
    assert_receive :in_tool, 60_000
    :persistent_term.put(:pynode_test_block, false)

    killed_at = System.monotonic_time(:millisecond)
    {_, 0} = System.cmd("kill", ["-9", "#{first_os_pid}"])

    assert {:error, %Error{kind: :nodedown}} = Task.await(run, 30_000)
    assert_receive {:pynode, :down, ^node}, 30_000
    assert_receive {:pynode, :down, ^node}, 30_000
    assert {:error, %Error{kind: :nodedown}} = Pynode.run(:restart_agent, "While away")

    assert_receive {:pynode, :up, ^node}, 60_000
    assert_receive {:pynode, :up, ^node}, 60_000
    :ok = Pynode.Agent.await_ready(:restart_agent, 60_000)
    assert {:ok, %Result{output: output}} = Pynode.run(:restart_agent, "Again")
    elapsed = System.monotonic_time(:millisecond) - killed_at
    assert output =~ "free"

    second_os_pid = Pynode.os_pid(RestartTest.Py)
    assert second_os_pid != first_os_pid
    refute alive_os_pid?(first_os_pid)
    IO.puts("\n[figure] kill -9 of the Python node to the next successful run: #{elapsed} ms")

    :ok = stop_supervised(RestartTest.Py)
    refute alive_os_pid?(second_os_pid)
  end

  test "the started node's output goes to Logger" do
    node = unique_node("logs")

    log =
      ExUnit.CaptureLog.capture_log(fn ->
        start_supervised!({Pynode, name: RestartTest.Logs, node: node, start: start_opts()})
        :ok = Pynode.await_ready(RestartTest.Logs, 60_000)
      end)

    assert log =~ "[#{node}]"
    assert log =~ "ready"
  end

  test "await_ready/2 times out while no node answers" do
    node = unique_node("nobody")
    start_supervised!({Pynode, name: RestartTest.Nobody, node: node, backoff_initial: 100})
    assert {:error, :timeout} = Pynode.await_ready(RestartTest.Nobody, 300)
    refute Pynode.connected?(RestartTest.Nobody)
    assert Pynode.os_pid(RestartTest.Nobody) == nil
    assert {:error, %Error{kind: :nodedown}} = Pynode.run({:anyone, node}, "Hi")
    refute_receive _, 200
  end

  test "this VM, started without distribution, was made a distributed node by the library" do
    start_supervised!({Pynode, name: RestartTest.Dist, node: unique_node("dist")})
    assert Node.alive?()
    assert Atom.to_string(node()) =~ ~r/^pynode_client_\d+@127\.0\.0\.1$/
  end
end
