defmodule Pynode.LogsTest do
  # The started node's log reaches Logger record by record: at the level Python logged it, with
  # its logger, agent and run id as metadata, and as much of it as Logger asks for.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Pynode.TestSupport

  @metadata [:pynode_logger, :pynode_node, :agent, :run_id]
  @format "[$level] $metadata| $message\n"

  defmodule Forward do
    @moduledoc false
    # A :logger handler that sends each message's text to the test process.
    @doc false
    @spec log(:logger.log_event(), :logger.handler_config()) :: :ok
    def log(%{msg: msg}, %{config: %{pid: pid}}) do
      send(pid, {:logged, text(msg)})
      :ok
    end

    defp text({:string, chardata}), do: IO.chardata_to_string(chardata)
    defp text({:report, report}), do: inspect(report)
    defp text({format, args}), do: format |> :io_lib.format(args) |> IO.chardata_to_string()
  end

  setup do
    level = Logger.level()
    :ok = :logger.add_handler(:pynode_logs_test, Forward, %{config: %{pid: self()}})

    on_exit(fn ->
      :logger.remove_handler(:pynode_logs_test)
      Logger.configure(level: level)
    end)
  end

  defp capture(fun), do: capture_log([format: @format, metadata: @metadata], fun)

  defp lines(log, text), do: log |> String.split("\n") |> Enum.filter(&(&1 =~ text))

  # The node's lines reach Logger in the order it wrote them: once one has been logged, every
  # line the node wrote before it has been logged too.
  defp await_logged(text, deadline \\ System.monotonic_time(:millisecond) + 60_000) do
    receive do
      {:logged, message} ->
        unless message =~ text, do: await_logged(text, deadline)
    after
      max(deadline - System.monotonic_time(:millisecond), 0) ->
        flunk("nothing logged said #{inspect(text)}")
    end
  end

  test "a node's line arrives at its level with its logger, and no Python timestamp or level" do
    node = unique_node("logs_info")

    log =
      capture(fn ->
        start_supervised!({Pynode, name: LogsTest.Info, node: node, start: start_opts()})
        :ok = Pynode.await_ready(LogsTest.Info, 60_000)
        await_logged(" ready ")
      end)

    # test/agents/storyteller.py, from the start options' --agents DIR.
    assert [registered] = lines(log, "agent storyteller registered")

    assert registered =~
             ~r/^\[info\] pynode_logger=pynode\.registry pynode_node=#{node} agent=storyteller \| \[#{node}\] agent storyteller registered \(model /

    # A line that is not a log record (the ready line on stdout) still arrives at :info.
    assert [ready] = lines(log, "#{node} ready (port ")
    assert ready =~ ~r/^\[info\] pynode_node=#{node} \| \[#{node}\] pynode #{node} ready/

    for line <- lines(log, "pynode_logger=") do
      refute line =~ ~r/\d\d:\d\d:\d\d,\d{3}|INFO|WARNING|DEBUG/, line
    end
  end

  test "with log_level: :debug a run's end arrives at :debug with its agent and run id" do
    Logger.configure(level: :debug)
    node = unique_node("logs_debug")
    start = Keyword.put(start_opts(), :log_level, :debug)

    log =
      capture(fn ->
        start_supervised!({Pynode, name: LogsTest.Debug, node: node, start: start})

        start_supervised!(
          {Pynode.Agent, pynode: LogsTest.Debug, name: :logs_debug_agent, spec: %{model: "test"}}
        )

        :ok = Pynode.Agent.await_ready(:logs_debug_agent, 60_000)
        {:ok, %Pynode.Result{run_id: run_id}} = Pynode.run(:logs_debug_agent, "Hello")
        await_logged("run #{run_id} of logs_debug_agent ended")
        send(self(), {:run_id, run_id})
      end)

    assert_received {:run_id, run_id}
    assert [ended] = lines(log, " ended: ")

    assert ended ==
             "[debug] pynode_logger=pynode.run pynode_node=#{node} agent=logs_debug_agent " <>
               "run_id=#{run_id} | [#{node}] run #{run_id} of logs_debug_agent ended: ok"
  end

  test "at the default level (Logger's, :info here) no run line is logged" do
    Logger.configure(level: :info)
    node = unique_node("logs_default")

    log =
      capture(fn ->
        start_supervised!({Pynode, name: LogsTest.Default, node: node, start: start_opts()})

        start_supervised!(
          {Pynode.Agent,
           pynode: LogsTest.Default, name: :logs_default_agent, spec: %{model: "test"}}
        )

        :ok = Pynode.Agent.await_ready(:logs_default_agent, 60_000)
        {:ok, %Pynode.Result{}} = Pynode.run(:logs_default_agent, "Hello")
        # The agent's owner exits after the run has ended: the node logs the agent's removal
        # after the end of the run, which it would have logged before.
        :ok = stop_supervised({Pynode.Agent, LogsTest.Default, :logs_default_agent})
        await_logged("agent logs_default_agent removed")
      end)

    assert [_removed] = lines(log, "agent logs_default_agent removed")
    assert lines(log, "ended") == []
    assert lines(log, "[debug]") == []
  end

  test "an app that names no agents folder gets no warning about one" do
    node = unique_node("logs_noagents")
    # A directory without ./agents, where the node would look for one by default.
    cd = Path.join(System.tmp_dir!(), "pynode-logs-#{System.unique_integer([:positive])}")
    File.mkdir_p!(cd)
    on_exit(fn -> File.rm_rf!(cd) end)

    log =
      capture(fn ->
        start_supervised!(
          {Pynode, name: LogsTest.NoAgents, node: node, start: [cmd: pynode_cmd(), cd: cd]}
        )

        :ok = Pynode.await_ready(LogsTest.NoAgents, 60_000)
        await_logged(" ready ")
      end)

    assert lines(log, " ready (port ") != []
    refute log =~ "no Python agents"
    refute log =~ "[warning]"
    assert {:ok, []} = Pynode.list_agents(LogsTest.NoAgents)
  end
end
