defmodule Pynode.RunsTest do
  # Runs against one real Python node, started by the library for this module.
  use ExUnit.Case, async: false

  import Pynode.TestSupport
  alias Pynode.{Error, Result, Run, Tool}

  defmodule HomeTools do
    def stock(%{"item" => item}),
      do: %{"item" => item, "count" => 42, "node" => Atom.to_string(node())}
  end

  setup_all do
    node = unique_node("runs")
    start_supervised!({Pynode, name: RunsTest.Py, node: node, start: start_opts()})

    start_supervised!(
      {Pynode.Agent,
       pynode: RunsTest.Py,
       name: :runs_assistant,
       spec: %{model: "test"},
       tools: [
         Tool.new(
           name: "stock",
           parameters: [item: [type: :string, required: true]],
           fun: &HomeTools.stock/1
         )
       ]}
    )

    start_supervised!(
      {Pynode.Agent, pynode: RunsTest.Py, name: :runs_plain, spec: %{model: "test"}},
      id: :plain
    )

    :ok = Pynode.await_ready(RunsTest.Py, 60_000)
    :ok = Pynode.Agent.await_ready(:runs_assistant, 60_000)
    :ok = Pynode.Agent.await_ready(:runs_plain, 60_000)
    %{node: node}
  end

  defp weather_tool(test_pid) do
    Tool.new(
      name: "weather",
      description: "Tomorrow's weather",
      parameters: [city: [type: :string, required: true, doc: "A city"]],
      fun: fn %{"city" => city} ->
        send(test_pid, {:weather_called, city, self()})
        %{"city" => city, "sky" => "clear"}
      end
    )
  end

  test "the node is up, hidden, and started by the library", %{node: node} do
    assert Pynode.connected?(RunsTest.Py)
    assert Pynode.node_name(RunsTest.Py) == node
    assert node in Node.list(:hidden)
    assert is_integer(Pynode.os_pid(RunsTest.Py)) and alive_os_pid?(Pynode.os_pid(RunsTest.Py))
    :ok = Pynode.subscribe(RunsTest.Py)
    assert_receive {:pynode, :up, ^node}
    :ok = Pynode.unsubscribe(RunsTest.Py)
  end

  test "run/3 with an agent's {M, F} tool, which runs on this node", %{node: node} do
    assert {:ok, %Result{} = result} = Pynode.run(:runs_assistant, "How many bolts?")
    assert result.output =~ "42"
    assert result.output =~ Atom.to_string(node())
    assert result.usage.tool_calls == 1
    assert is_binary(result.messages) and is_binary(result.new_messages)
    assert is_binary(result.run_id)
    assert %Result{} = Pynode.run!({:runs_assistant, node}, "Again")
  end

  test "run/3 serves an Elixir function tool in this application" do
    assert {:ok, result} = Pynode.run(:runs_plain, "Weather?", tools: [weather_tool(self())])
    assert_received {:weather_called, _city, worker}
    assert worker != self()
    assert result.output =~ "clear"
    refute_received {:pynode_tool_call, _, _}
  end

  test "a tool of arity 2 gets the run's deps and ids" do
    tool =
      Tool.new(
        name: "whoami",
        fun: fn _args, ctx ->
          send(ctx.deps["test"] |> :erlang.list_to_pid(), {:ctx, ctx})
          {:ok, ctx.deps["user"]}
        end
      )

    deps = %{"user" => "ada", "test" => :erlang.pid_to_list(self())}
    assert {:ok, result} = Pynode.run(:runs_plain, "Who?", tools: [tool], deps: deps)
    assert result.output =~ "ada"
    assert_received {:ctx, %{deps: %{"user" => "ada"}, run_ref: ref, call_id: id, tool: "whoami"}}
    assert is_reference(ref) and is_binary(id)
  end

  test "on_event sees the tool's call and result; errors and raises are tool errors the run survives" do
    tools = [
      weather_tool(self()),
      Tool.new(name: "broken", fun: fn _ -> raise ArgumentError, "no such city" end),
      Tool.new(name: "refusing", fun: fn _ -> {:error, "closed today"} end)
    ]

    me = self()

    assert {:ok, result} =
             Pynode.run(:runs_plain, "Go", tools: tools, on_event: &send(me, {:ev, &1}))

    assert_received {:ev, {:tool_call, "weather", %{"city" => _}, _}}
    assert_received {:ev, {:tool_result, "weather", _, _}}
    assert_received {:ev, {:tool_error, "broken", broken, _}}
    assert broken =~ "no such city"
    assert_received {:ev, {:tool_error, "refusing", refusing, _}}
    assert refusing =~ "closed today"
    assert result.output =~ "clear"
  end

  test "a tool past its own timeout fails, and the run goes on" do
    slow = Tool.new(name: "slow", timeout: 200, fun: fn _ -> Process.sleep(:infinity) end)
    me = self()
    assert {:ok, _} = Pynode.run(:runs_plain, "Go", tools: [slow], on_event: &send(me, {:ev, &1}))
    assert_received {:ev, {:tool_error, "slow", message, _}}
    assert message =~ "did not answer within 200 ms"
  end

  test "tools run under the library's Task.Supervisor; a killed tool or a linked crash is a tool error" do
    me = self()

    tools = [
      Tool.new(name: "killed", fun: fn _ -> Process.exit(self(), :kill) end),
      Tool.new(
        name: "linked",
        fun: fn _ ->
          spawn_link(fn -> exit(:boom) end)
          Process.sleep(:infinity)
        end
      ),
      Tool.new(
        name: "where",
        fun: fn _ ->
          [server | _] = Process.get(:"$callers")
          children = Task.Supervisor.children(Pynode.TaskSupervisor)
          send(me, {:where, Process.get(:"$ancestors"), server in children, self() in children})
          "here"
        end
      )
    ]

    assert {:ok, _} = Pynode.run(:runs_plain, "Go", tools: tools, on_event: &send(me, {:ev, &1}))
    assert_received {:ev, {:tool_error, "killed", killed, _}}
    assert killed =~ "tool killed exited: :killed"
    assert_received {:ev, {:tool_error, "linked", linked, _}}
    assert linked =~ "tool linked exited: :boom"
    assert_received {:ev, {:tool_result, "where", _, _}}
    # The tool ran as a child of Pynode.TaskSupervisor, and so did the run's tool server.
    assert_received {:where, [Pynode.TaskSupervisor | _], true, true}
  end

  test "info/1 and list_agents/1 ask the node's registry" do
    assert {:ok, %{agents: agents, runs: _, node: node}} = Pynode.info(RunsTest.Py)
    assert node == Pynode.node_name(RunsTest.Py) and agents >= 3
    assert {:ok, listed} = Pynode.list_agents(RunsTest.Py)
    names = Enum.map(listed, & &1.name)
    assert :runs_assistant in names and :runs_plain in names and :storyteller in names
  end

  test "inspecting a result leaves out the conversation, which stays in the struct" do
    assert {:ok, result} = Pynode.run(:runs_plain, "Weather?", tools: [weather_tool(self())])
    assert is_binary(result.messages) and byte_size(result.messages) > 500
    shown = inspect(result)
    assert shown =~ "#Pynode.Result<" and shown =~ "output: " and shown =~ "usage: "
    refute shown =~ "messages"
    assert byte_size(shown) < byte_size(result.messages)
  end

  test "stream/3: events, then the result" do
    events =
      Pynode.stream(:runs_plain, "Weather?", tools: [weather_tool(self())]) |> Enum.to_list()

    assert [{:tool_call, "weather", _, id}, {:tool_result, "weather", _, id} | rest] = events
    assert {:done, %Result{output: output}} = List.last(rest)
    assert output =~ "clear"
    assert Enum.all?(Enum.drop(rest, -1), &match?({:text_delta, _}, &1))
  end

  test "halting a stream early cancels the run on the node", %{node: node} do
    assert [{:text_delta, _}, {:text_delta, _}] =
             Pynode.stream({:storyteller, node}, "A story, please") |> Enum.take(2)

    assert eventually(fn -> node_runs(node) == 0 end)
    refute_receive {:pynode_event, _, _}, 200
    refute_received {:pynode_result, _, _}
  end

  test "a timed-out run returns only after its tool processes have exited" do
    me = self()

    stuck =
      Tool.new(
        name: "stuck",
        timeout: :infinity,
        fun: fn _ ->
          send(me, {:tool_pid, self()})
          Process.sleep(:infinity)
        end
      )

    assert {:error, %Error{kind: :timeout}} =
             Pynode.run(:runs_plain, "Go", tools: [stuck], timeout: 1_000)

    assert_received {:tool_pid, pid}
    refute Process.alive?(pid)
  end

  test "the run's timeout cancels it on the node and leaves no message behind", %{node: node} do
    stuck = Tool.new(name: "stuck", timeout: :infinity, fun: fn _ -> Process.sleep(:infinity) end)

    assert {:error, %Error{kind: :timeout}} =
             Pynode.run(:runs_plain, "Go", tools: [stuck], timeout: 1_000)

    assert eventually(fn -> node_runs(node) == 0 end)
    refute_receive _, 500

    assert {:error, %Error{kind: :timeout}} =
             Pynode.run({:storyteller, node}, "A story", timeout: 500, on_event: fn _ -> :ok end)

    assert eventually(fn -> node_runs(node) == 0 end)
    refute_receive _, 500
  end

  test "start_run/3 and Run.handle_info/2, as a GenServer would use them" do
    {:ok, %Run{} = run} = Pynode.start_run(:runs_plain, "Weather?", tools: [weather_tool(self())])
    assert_receive {:weather_called, _, _}, 30_000
    {events, outcome} = collect(run, [])
    assert [{:tool_call, "weather", _, _} | _] = events
    assert {:done, %Result{}} = outcome
    assert Run.handle_info(:something_else, run) == :unknown
    refute_receive _, 200
  end

  test "start_run/3 with events: false delivers only the result" do
    {:ok, run} = Pynode.start_run(:runs_assistant, "Hi", events: false)
    assert {[], {:done, %Result{}}} = collect(run, [])
  end

  test "start_run/3's timeout arrives as a message and cancels the run", %{node: node} do
    {:ok, run} = Pynode.start_run({:storyteller, node}, "A story", timeout: 300, events: false)
    assert {[], {:error, %Error{kind: :timeout}}} = collect(run, [])
    assert eventually(fn -> node_runs(node) == 0 end)
    refute_receive _, 300
  end

  test "cancel/1 ends a run on the node and empties the mailbox of it", %{node: node} do
    {:ok, run} = Pynode.start_run({:storyteller, node}, "A story")
    assert_receive {:pynode_event, _, {:text_delta, _}}, 30_000
    assert :ok = Pynode.cancel(run)
    assert eventually(fn -> node_runs(node) == 0 end)
    refute_receive _, 300
    # Cancelling a run that has ended is harmless.
    assert :ok = Pynode.cancel(run)
    refute_receive _, 100
  end

  test "messages_as: :terms gives maps that continue the conversation" do
    assert {:ok, first} = Pynode.run(:runs_plain, "Remember me", messages_as: :terms)
    assert [%{} | _] = first.messages
    assert Enum.all?(first.new_messages, &is_map/1)

    assert {:ok, second} =
             Pynode.run(:runs_plain, "And now?",
               messages_as: :terms,
               message_history: first.messages
             )

    assert length(second.messages) > length(first.messages)
  end

  test "output: a keyword spec gives structured output" do
    assert {:ok, %Result{output: output}} =
             Pynode.run(:runs_plain, "A city",
               output: [
                 city: [type: :string, required: true],
                 population: [type: :integer, required: true]
               ]
             )

    assert %{"city" => city, "population" => population} = output
    assert is_binary(city) and is_integer(population)
  end

  test "stream/3 with an output spec streams output deltas, then the validated map" do
    events =
      Pynode.stream(:runs_plain, "A city", output: [city: [type: :string, required: true]])
      |> Enum.to_list()

    assert {:done, %Result{output: %{"city" => city}}} = List.last(events)
    assert Enum.any?(events, &match?({:output_delta, %{"city" => _}}, &1))
    assert is_binary(city)
  end

  test "errors are values: unknown agents, bad options, the node's own kinds", %{node: node} do
    assert {:error, %Error{kind: :unknown_agent}} = Pynode.run(:nobody_here, "Hi")
    assert {:error, %Error{kind: :unknown_agent}} = Pynode.run({:nobody_here, node}, "Hi")

    assert {:error, %Error{kind: :model_unavailable}} =
             Pynode.run(:runs_plain, "Hi", model: "nosuch:model")

    assert_raise Error, ~r/unknown_agent/, fn -> Pynode.run!(:nobody_here, "Hi") end
    assert_raise ArgumentError, fn -> Pynode.run(:runs_plain, "Hi", colour: :red) end
  end

  test "100 concurrent runs, each serving its own tool" do
    tasks =
      for i <- 1..100 do
        Task.async(fn ->
          tool = Tool.new(name: "number", fun: fn _ -> %{"n" => i} end)
          Pynode.run(:runs_plain, "Your number?", tools: [tool], timeout: 120_000)
        end)
      end

    results = Task.await_many(tasks, 180_000)

    assert length(results) == 100

    for {result, i} <- Enum.with_index(results, 1) do
      assert {:ok, %Result{output: output}} = result
      assert output =~ ~s("n":#{i})
    end
  end

  defp collect(run, events) do
    receive do
      message ->
        case Run.handle_info(message, run) do
          {:event, event} -> collect(run, [event | events])
          :unknown -> collect(run, events)
          done_or_error -> {Enum.reverse(events), done_or_error}
        end
    after
      60_000 -> flunk("the run sent nothing for 60 s")
    end
  end
end
