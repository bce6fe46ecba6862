defmodule Pynode.AgentTest do
  # Pynode.Agent: names scoped to their Pynode, a create_agent that gets no answer, stopping.
  use ExUnit.Case, async: false

  import Pynode.TestSupport
  alias Pynode.{Error, Result}

  defp agents_on(node) do
    {:ok, agents} = GenServer.call({:pynode, node}, :list_agents)
    Enum.map(agents, & &1.name)
  end

  @tag timeout: 180_000
  test "two Pynode children each host an agent of one name; a run says which with :pynode" do
    [node_a, node_b] = [unique_node("scoped_a"), unique_node("scoped_b")]
    start_supervised!({Pynode, name: AgentTest.A, node: node_a, start: start_opts()})
    start_supervised!({Pynode, name: AgentTest.B, node: node_b, start: start_opts()})
    # The same name on both: the child ids are scoped too, so one supervisor holds both.
    start_supervised!({Pynode.Agent, pynode: AgentTest.A, name: :scoped, spec: %{model: "test"}})

    start_supervised!(
      {Pynode.Agent,
       pynode: AgentTest.B,
       name: :scoped,
       spec: %{model: "test"},
       output: [city: [type: :string, required: true]]}
    )

    :ok = Pynode.Agent.await_ready(:scoped, pynode: AgentTest.A, timeout: 60_000)
    :ok = Pynode.Agent.await_ready(:scoped, pynode: AgentTest.B, timeout: 60_000)

    assert {:error, %Error{kind: :bad_request, message: message}} = Pynode.run(:scoped, "Hi")

    assert message =~
             "more than one Pynode hosts an agent named :scoped (AgentTest.A, AgentTest.B)"

    assert_raise ArgumentError, ~r/more than one Pynode/, fn ->
      Pynode.Agent.await_ready(:scoped)
    end

    assert {:ok, %Result{output: text}} = Pynode.run(:scoped, "Hi", pynode: AgentTest.A)
    assert is_binary(text)
    assert {:ok, %Result{output: %{"city" => _}}} = Pynode.run(:scoped, "Hi", pynode: AgentTest.B)

    assert {:error, %Error{kind: :unknown_agent, message: nobody}} =
             Pynode.run(:scoped, "Hi", pynode: AgentTest.Nobody)

    assert nobody =~ "on AgentTest.Nobody"

    # Stopping an agent's process takes no call: the node deletes the agent it owned.
    assert :scoped in agents_on(node_b)
    :ok = stop_supervised({Pynode.Agent, AgentTest.B, :scoped})
    assert eventually(fn -> :scoped not in agents_on(node_b) end)
    assert :scoped in agents_on(node_a)
    assert {:ok, %Result{output: text}} = Pynode.run(:scoped, "Hi")
    assert is_binary(text)
  end

  test "while create_agent gets no answer the agent serves calls, gives up after :create_timeout and asks again" do
    # This VM stands in for a node that never answers: the test process is its `pynode`.
    Process.register(self(), :pynode)
    on_exit(fn -> if Process.whereis(:pynode), do: Process.unregister(:pynode) end)
    start_supervised!({Pynode, name: AgentTest.Silent, node: node()})

    agent =
      start_supervised!(
        {Pynode.Agent,
         pynode: AgentTest.Silent,
         name: :silent_agent,
         spec: %{model: "test"},
         create_timeout: 1_000,
         retry_interval: 10}
      )

    assert_receive {:"$gen_call", first,
                    {:create_agent, :silent_agent, %{model: "test"}, %{owner: ^agent}}},
                   5_000

    this = node()

    assert %{nodes: %{^this => %{creating: {_request, _timer}}}, ready: false} =
             :sys.get_state(agent, 1_000)

    assert Pynode.Agent.await_ready(:silent_agent, 100) == {:error, :timeout}

    assert {:error, %Error{kind: :nodedown, message: message}} = Pynode.run(:silent_agent, "Hi")
    assert message =~ "not created yet"

    assert_receive {:"$gen_call", second, {:create_agent, :silent_agent, _, _}}, 5_000
    # The first answer comes too late: the agent gave that request up, and the BEAM drops it.
    GenServer.reply(first, {:error, {:internal_error, "too late"}})
    GenServer.reply(second, {:ok, :silent_agent})
    assert Pynode.Agent.await_ready(:silent_agent, 5_000) == :ok

    assert %{nodes: %{^this => %{creating: nil, ready: true}}, ready: true} =
             :sys.get_state(agent, 1_000)

    :ok = stop_supervised({Pynode.Agent, AgentTest.Silent, :silent_agent})
    refute_receive {:"$gen_call", _, _}, 200
  end
end
