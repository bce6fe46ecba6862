defmodule Pynode.ClusterTest do
  # Several Python nodes as one Pynode.Cluster: the agent on every node, runs spread over the
  # :pg members, kill -9 of a node, drains and a rolling restart under load, a restarted scope.
  # One cluster of three started nodes serves the module; each test starts with the agent on
  # all three (the tests that kill or drain a node wait for it to come back).
  use ExUnit.Case, async: false

  import Pynode.TestSupport
  alias Pynode.{Cluster, Error, Result}

  @cluster ClusterTest.Py
  @agent :cluster_agent

  setup_all do
    start_supervised!({
      Cluster,
      # :info: the nodes do not log each run's end (:debug), as in production.
      name: @cluster,
      start: [count: 3, log_level: :info] ++ start_opts(),
      pynode: [backoff_initial: 100, stop_timeout: 5_000]
    })

    start_supervised!({Pynode.Agent, pynode: @cluster, name: @agent, spec: %{model: "test"}})
    :ok = Pynode.await_ready(@cluster, 60_000)
    :ok = Cluster.await_members(@cluster, @agent, :all, 60_000)
    :ok
  end

  setup do
    :ok = Cluster.await_members(@cluster, @agent, :all, 30_000)
    %{nodes: Cluster.nodes(@cluster)}
  end

  # A model (run here, for the node) that tells the test it was called, then takes `ms`.
  defp slow_model(test_pid, ms) do
    {:function,
     fn _messages, _info ->
       send(test_pid, :in_model)
       Process.sleep(ms)
       "slow answer"
     end}
  end

  defp prefer(node),
    do: fn members -> Enum.find(members, &(node(&1) == node)) || Enum.random(members) end

  defp pynode_of(node), do: @cluster |> Cluster.pynodes() |> List.keyfind(node, 0) |> elem(1)

  defp timed_runs(count, concurrency, opts) do
    started = System.monotonic_time(:millisecond)

    results =
      1..count
      |> Task.async_stream(fn i -> Pynode.run(@agent, "run #{i}", opts) end,
        max_concurrency: concurrency,
        timeout: 30_000
      )
      |> Enum.map(fn {:ok, result} -> result end)

    {results, System.monotonic_time(:millisecond) - started}
  end

  defp receive_n(_message, 0, _timeout), do: :ok

  defp receive_n(message, n, timeout) do
    receive do
      ^message -> receive_n(message, n - 1, timeout)
    after
      timeout -> flunk("#{n} more #{inspect(message)} did not come within #{timeout} ms")
    end
  end

  defp flush(message) do
    receive do
      ^message -> flush(message)
    after
      0 -> :ok
    end
  end

  # Callers that run the agent one run after another until told to stop: what they got.
  defp start_load(callers, opts) do
    for i <- 1..callers do
      Task.async(fn -> load_loop(i, opts, []) end)
    end
  end

  defp load_loop(i, opts, acc) do
    receive do
      :stop -> acc
    after
      0 ->
        started = System.monotonic_time(:millisecond)
        result = Pynode.run(@agent, "load #{i}", opts)
        load_loop(i, opts, [{result, System.monotonic_time(:millisecond) - started} | acc])
    end
  end

  defp stop_load(tasks) do
    for task <- tasks, do: send(task.pid, :stop)
    tasks |> Enum.flat_map(&Task.await(&1, 30_000))
  end

  test "the agent is on every node: members/2 lists them, subscribers get them", %{nodes: nodes} do
    assert length(nodes) == 3
    assert Enum.all?(nodes, &(&1 in Node.list(:hidden)))
    members = Pynode.members(@cluster, @agent)
    assert members |> Enum.map(&node/1) |> Enum.sort() == Enum.sort(nodes)

    for pid <- members do
      assert {:ok, %{name: @agent}} = GenServer.call(pid, :info)
    end

    # The nodes' registries are the group :pynode.
    assert @cluster |> Pynode.members(:pynode) |> Enum.map(&node/1) |> Enum.sort() ==
             Enum.sort(nodes)

    :ok = Pynode.subscribe(@cluster)
    for node <- nodes, do: assert_receive({:pynode, :up, ^node})
    assert_receive {:pynode, :members, @agent, ^members}
    :ok = Pynode.unsubscribe(@cluster)

    assert :ok = Cluster.await_members(@cluster, @agent, 3, 1_000)
    assert {:error, :timeout} = Cluster.await_members(@cluster, :nobody_has_it, 1, 200)
    assert Pynode.members(@cluster, :nobody_has_it) == []

    # One node's functions want one node.
    assert_raise ArgumentError, ~r/is a Pynode.Cluster, not one node/, fn ->
      Pynode.os_pid(@cluster)
    end

    for {node, pynode} <- Cluster.pynodes(@cluster) do
      assert Pynode.node_name(pynode) == node and Pynode.connected?(pynode)
    end
  end

  test "runs spread over the members; pick: chooses one", %{nodes: nodes} do
    {results, _ms} = timed_runs(50, 10, [])
    assert Enum.all?(results, &match?({:ok, %Result{}}, &1))
    served = Enum.frequencies_by(results, fn {:ok, %Result{node: node}} -> node end)
    assert served |> Map.keys() |> Enum.sort() == Enum.sort(nodes), inspect(served)

    [first | _] = nodes
    {results, _ms} = timed_runs(10, 5, pick: prefer(first))
    assert Enum.all?(results, &match?({:ok, %Result{node: ^first}}, &1))

    # Every node here is on this host: :local picks among all of them.
    {results, _ms} = timed_runs(30, 10, pick: :local)
    assert results |> Enum.map(fn {:ok, r} -> r.node end) |> Enum.uniq() |> length() > 1

    # start_run tells at once which member took the run.
    {:ok, run} = Pynode.start_run(@agent, "hi", events: false)
    {_name, node} = run.agent
    assert node in nodes

    assert_receive message, 10_000
    assert {:done, %Result{node: ^node}} = Pynode.Run.handle_info(message, run)
  end

  test "throughput with 1, 2 and 3 nodes (200 runs from 20 callers)", %{nodes: nodes} do
    # Interleaved, twice, the better of the two (the machine is shared), after a warm-up.
    # "direct" is the same runs sent straight to one node's agent as {name, node}, no cluster.
    {warm_up, _ms} = timed_runs(100, 20, [])
    assert Enum.all?(warm_up, &match?({:ok, _}, &1))

    configs =
      [direct: {{@agent, hd(nodes)}, []}] ++ for(k <- 1..3, do: {k, {@agent, serving(nodes, k)}})

    rates =
      for _round <- 1..2, {label, {agent, opts}} <- configs do
        started = System.monotonic_time(:millisecond)

        results =
          1..200
          |> Task.async_stream(fn i -> Pynode.run(agent, "run #{i}", opts) end,
            max_concurrency: 20,
            timeout: 30_000
          )
          |> Enum.map(fn {:ok, result} -> result end)

        ms = System.monotonic_time(:millisecond) - started
        assert Enum.all?(results, &match?({:ok, %Result{}}, &1))
        used = results |> Enum.map(fn {:ok, r} -> r.node end) |> Enum.uniq() |> length()
        assert used == if(label == :direct, do: 1, else: label)
        {label, round(200 * 1_000 / max(ms, 1))}
      end

    best = fn label -> Enum.max(for {^label, rate} <- rates, do: rate) end
    line = Enum.map_join(1..3, ", ", fn k -> "#{k} node(s): #{best.(k)} runs/s" end)

    IO.puts(
      "\n[figure] cluster throughput (TestModel, 200 runs, 20 callers): #{line}; " <>
        "1 node as {name, node}, no cluster: #{best.(:direct)} runs/s"
    )
  end

  # Run options that spread runs over the first k nodes only.
  defp serving(nodes, k) do
    serving = Enum.take(nodes, k)
    [pick: fn members -> members |> Enum.filter(&(node(&1) in serving)) |> Enum.random() end]
  end

  test "the cluster's own process restarted: the agents stay as they are" do
    members = Pynode.members(@cluster, @agent)
    [{agent_pid, _}] = Registry.lookup(Pynode.Registry, {:agent, @cluster, @agent})
    server = Process.whereis(@cluster)
    Process.exit(server, :kill)
    assert eventually(fn -> Process.whereis(@cluster) not in [nil, server] end, 100, 20)
    :ok = Pynode.await_ready(@cluster, 5_000)

    # The agent's process subscribed again, and asked each node to keep the agent it has.
    assert eventually(
             fn ->
               %{nodes: parts} = :sys.get_state(agent_pid)

               Enum.all?(parts, fn {_, part} ->
                 part.up and part.ready and part.creating == nil
               end)
             end,
             100,
             20
           )

    assert Registry.lookup(Pynode.Registry, {:agent, @cluster, @agent}) |> hd() |> elem(0) ==
             agent_pid

    assert Pynode.members(@cluster, @agent) == members
    assert {:ok, %Result{}} = Pynode.run(@agent, "still here")
  end

  test "an agent no node has, a Python-defined agent on every node, bad options" do
    assert {:error, %Error{kind: :nodedown, message: message}} =
             Pynode.run(:nobody_has_it, "hi", pynode: @cluster)

    assert message =~ "no member of ClusterTest.Py serves the agent :nobody_has_it"

    # test/agents/storyteller.py is on each node (--agents): pynode: the cluster runs it.
    assert @cluster |> Pynode.members(:storyteller) |> length() == 3

    assert [{:text_delta, _}, {:text_delta, _}] =
             :storyteller |> Pynode.stream("go", pynode: @cluster) |> Enum.take(2)

    assert_raise ArgumentError, ~r/pick: must be/, fn ->
      Pynode.run(@agent, "hi", pick: :nearest)
    end

    assert_raise ArgumentError, ~r/retry: must be/, fn ->
      Pynode.run(@agent, "hi", retry: true)
    end

    assert_raise ArgumentError, ~r/needs nodes: \[...\]/, fn ->
      Cluster.start_link(name: ClusterTest.Bad)
    end

    assert_raise ArgumentError, ~r/count: n\] must be a positive integer/, fn ->
      Cluster.start_link(name: ClusterTest.Bad, nodes: [:"a@127.0.0.1"], start: [count: 2])
    end

    assert_raise ArgumentError, ~r/--no-pg/, fn ->
      Cluster.start_link(name: ClusterTest.Bad, start: [count: 1, cmd: "x", args: ["--no-pg"]])
    end
  end

  # A member of the agent's group on this node that answers every start_run with `refusal`.
  defp fake_member(refusal) do
    me = self()

    pid =
      spawn_link(fn ->
        :ok = :pg.join(:pynode_agents, @agent, self())
        send(me, {:joined, self()})
        refuse(me, refusal)
      end)

    assert_receive {:joined, ^pid}
    pid
  end

  defp refuse(test_pid, refusal) do
    receive do
      {:"$gen_call", from, {:start_run, _prompt, _opts}} ->
        send(test_pid, {:asked, self()})
        GenServer.reply(from, {:error, refusal})
        refuse(test_pid, refusal)
    end
  end

  test "a member that did not take the run (draining, overloaded): the next one gets it",
       %{nodes: nodes} do
    # This node is a node of these clusters too, where fake members refuse every run.
    start_supervised!({Cluster, name: ClusterTest.Fake, nodes: [node() | nodes]}, id: :fake)
    start_supervised!({Cluster, name: ClusterTest.FakeOnly, nodes: [node()]}, id: :fake_only)
    draining = fake_member({:draining, "the node is draining"})
    here = node()

    assert {:ok, %Result{node: served}} =
             Pynode.run(@agent, "hi", pynode: ClusterTest.Fake, pick: prefer(here))

    assert served in nodes
    assert_received {:asked, ^draining}

    assert {:error, %Error{kind: :draining}} =
             Pynode.run(@agent, "hi", pynode: ClusterTest.Fake, pick: prefer(here), retry: :never)

    assert_received {:asked, ^draining}

    # Every member refused: one error that says why, each member asked once.
    overloaded = fake_member({:overloaded, "max_concurrency 1 reached"})

    assert {:error, %Error{kind: :nodedown, message: message}} =
             Pynode.run(@agent, "hi", pynode: ClusterTest.FakeOnly)

    assert message =~ "no member of ClusterTest.FakeOnly took the run of :cluster_agent: "
    assert message =~ "#{here} is draining"
    assert message =~ "#{here} is overloaded (max_concurrency 1 reached)"
    assert_received {:asked, ^draining}
    assert_received {:asked, ^overloaded}
    refute_received {:asked, _}

    # When each member is at its limit, the error says so: back off.
    Process.unlink(draining)
    Process.exit(draining, :kill)
    assert eventually(fn -> draining not in Pynode.members(ClusterTest.FakeOnly, @agent) end)

    assert {:error, %Error{kind: :overloaded, message: message}} =
             Pynode.run(@agent, "hi", pynode: ClusterTest.FakeOnly)

    assert message =~ "is overloaded"
  end

  test "a cluster of nodes that run already (nodes:) serves the same agents", %{nodes: nodes} do
    # It reads the scope every 200 ms instead of monitoring it (what an OTP < 25.1 gets).
    start_supervised!({Cluster, name: ClusterTest.Remote, nodes: nodes, membership: :poll})
    :ok = Pynode.await_ready(ClusterTest.Remote, 10_000)
    members = Pynode.members(@cluster, @agent)
    assert Pynode.members(ClusterTest.Remote, @agent) == members
    :ok = Cluster.await_members(ClusterTest.Remote, @agent, :all, 5_000)
    :ok = Pynode.subscribe(ClusterTest.Remote)
    assert_receive {:pynode, :members, @agent, ^members}, 1_000

    assert {:ok, %Result{node: node}} =
             Pynode.run(@agent, "hi", pynode: ClusterTest.Remote, pick: prefer(List.last(nodes)))

    assert node == List.last(nodes)
  end

  test "kill -9 of a node: not-taken runs go elsewhere, taken ones end :nodedown or run again",
       %{nodes: nodes} do
    me = self()
    [victim | others] = nodes
    victim_pynode = pynode_of(victim)
    os_pid = Pynode.os_pid(victim_pynode)
    [old_member] = @cluster |> Pynode.members(@agent) |> Enum.filter(&(node(&1) == victim))
    slow = slow_model(me, 1_500)
    timeout = 10_000

    run = fn opts ->
      Task.async(fn ->
        started = System.monotonic_time(:millisecond)
        result = Pynode.run(@agent, "hi", [timeout: timeout, model: slow] ++ opts)
        {result, System.monotonic_time(:millisecond) - started}
      end)
    end

    # In flight on the victim when it dies: three that end :nodedown, three that run again.
    lost = for _ <- 1..3, do: run.(pick: prefer(victim))
    again = for _ <- 1..3, do: run.(pick: prefer(victim), retry: :always)
    # In flight on the other nodes: not touched.
    elsewhere =
      for _ <- 1..6,
          do:
            run.(pick: fn members -> Enum.random(Enum.filter(members, &(node(&1) != victim))) end)

    receive_n(:in_model, 12, 10_000)

    killed_at = System.monotonic_time(:millisecond)
    {_, 0} = System.cmd("kill", ["-9", "#{os_pid}"])

    # Right after the kill: runs that prefer the victim while :pg may still list it. None is
    # taken by a dead node, so each goes to another member at once.
    after_kill =
      for _ <- 1..10 do
        Task.async(fn ->
          result = Pynode.run(@agent, "hi", pick: prefer(victim), timeout: timeout)
          {result, System.monotonic_time(:millisecond)}
        end)
      end

    gone =
      eventually(
        fn ->
          if Enum.all?(Pynode.members(@cluster, @agent), &(node(&1) != victim)),
            do: System.monotonic_time(:millisecond)
        end,
        100,
        10
      )

    assert gone, "the victim's member was still in :pg 1 s after kill -9"
    assert gone - killed_at <= 1_000

    after_kill = Enum.map(after_kill, &Task.await(&1, timeout + 1_000))

    for {result, _at} <- after_kill do
      assert {:ok, %Result{node: node}} = result
      assert node in others
    end

    first_served = after_kill |> Enum.map(fn {_, at} -> at end) |> Enum.min()

    for {result, ms} <- Enum.map(lost, &Task.await(&1, timeout + 1_000)) do
      assert {:error, %Error{kind: :nodedown, message: message}} = result
      assert message =~ "#{victim} went away during the run"
      assert ms < timeout
    end

    for {result, ms} <- Enum.map(again, &Task.await(&1, timeout + 1_000)) do
      assert {:ok, %Result{output: "slow answer", node: node}} = result
      assert node in others
      assert ms < timeout
    end

    for {result, ms} <- Enum.map(elsewhere, &Task.await(&1, timeout + 1_000)) do
      assert {:ok, %Result{node: node}} = result
      assert node in others
      assert ms < timeout
    end

    # The Pynode child starts the node again, and the agent comes back on it.
    :ok = Cluster.await_members(@cluster, @agent, :all, 30_000)
    [new_member] = @cluster |> Pynode.members(@agent) |> Enum.filter(&(node(&1) == victim))
    assert new_member != old_member
    assert Pynode.os_pid(victim_pynode) not in [nil, os_pid]
    refute alive_os_pid?(os_pid)
    back_at = System.monotonic_time(:millisecond)

    IO.puts(
      "\n[figure] kill -9 of one of 3 nodes: members gone from :pg in #{gone - killed_at} ms; " <>
        "first run served by another member #{first_served - killed_at} ms after the kill; " <>
        "the node back with the agent after #{back_at - killed_at} ms"
    )
  end

  test "two Elixir nodes, 2,000 runs with an Elixir tool, one Python node killed -9 and back",
       %{nodes: nodes} do
    alias Pynode.TestSupport.Peer
    timeout = 10_000
    {peer, other} = Peer.start(:"cluster_peer#{System.unique_integer([:positive])}")
    :ok = :erpc.call(other, Peer, :start_cluster, [ClusterTest.PeerPy, nodes], 60_000)
    members_there = fn -> :erpc.call(other, Pynode, :members, [ClusterTest.PeerPy, @agent]) end
    assert eventually(fn -> length(members_there.()) == 3 end, 100, 50)

    [victim | others] = nodes
    victim_pynode = pynode_of(victim)
    os_pid = Pynode.os_pid(victim_pynode)

    # 1,000 runs from each Elixir node, 10 at a time; each calls the tool on its own node.
    here = Task.async(fn -> Peer.run_many(@agent, @cluster, 1_000, 10, timeout) end)

    there =
      Task.async(fn ->
        :erpc.call(
          other,
          Peer,
          :run_many,
          [@agent, ClusterTest.PeerPy, 1_000, 10, timeout],
          120_000
        )
      end)

    # Kill the victim once both are under way (its node has served runs from here).
    assert eventually(fn -> node_runs(victim) > 0 end, 200, 10)
    Process.sleep(300)
    killed_at = System.monotonic_time(:millisecond)
    {_, 0} = System.cmd("kill", ["-9", "#{os_pid}"])

    gone_from = fn members -> Enum.all?(members.(), &(node(&1) != victim)) end
    mine = fn -> Pynode.members(@cluster, @agent) end

    gone =
      eventually(
        fn ->
          if gone_from.(mine) and gone_from.(members_there),
            do: System.monotonic_time(:millisecond)
        end,
        100,
        10
      )

    assert gone, "the victim's member was still in :pg on an Elixir node 1 s after kill -9"

    # The node comes back (this node's cluster starts it again) while the runs go on.
    :ok = Cluster.await_members(@cluster, @agent, :all, 30_000)
    back_at = System.monotonic_time(:millisecond)
    results_here = Task.await(here, 120_000)
    results_there = Task.await(there, 130_000)
    ended_at = System.monotonic_time(:millisecond)

    for {results, caller} <- [{results_here, node()}, {results_there, other}] do
      assert length(results) == 1_000

      for {summary, ms} <- results do
        assert ms < timeout + 1_000, "a run took #{ms} ms, past its timeout"

        case summary do
          {:ok, served, output} ->
            assert served in nodes
            # The model's output carries what the Elixir tool on the caller's node returned.
            assert output =~ "ran on #{caller}"

          # Taken by the victim, and lost with it.
          {:error, :nodedown, message} ->
            assert message =~ "#{victim} went away during the run"
        end
      end
    end

    all = results_here ++ results_there
    lost = Enum.count(all, &match?({{:error, _, _}, _}, &1))
    # Each of the 20 callers had at most one run on the victim when it died; every run the
    # victim had not taken went to another member and succeeded.
    assert lost <= 20, "#{lost} runs lost"
    assert Enum.count(all, &match?({{:ok, _, _}, _}, &1)) == 2_000 - lost
    assert Enum.any?(all, &match?({{:ok, ^victim, _}, _}, &1))
    assert Enum.all?(others, fn node -> Enum.any?(all, &match?({{:ok, ^node, _}, _}, &1)) end)

    IO.puts(
      "\n[figure] 2 Elixir nodes, 2,000 runs with an Elixir tool, kill -9 of one of 3 nodes: " <>
        "#{lost} runs lost with it, the rest ok; members gone from :pg on both Elixir nodes " <>
        "#{gone - killed_at} ms after the kill; node back after #{back_at - killed_at} ms; " <>
        "runs over #{ended_at - killed_at} ms after the kill"
    )

    :ok = :peer.stop(peer)
  end

  test "the agent declared on two Elixir nodes is shared: one of them leaving cancels nothing",
       %{nodes: nodes} do
    alias Pynode.TestSupport.Peer
    members = Pynode.members(@cluster, @agent)
    {peer, other} = Peer.start(:"cluster_app#{System.unique_integer([:positive])}")
    agent = [name: @agent, spec: %{model: "test"}]
    :ok = :erpc.call(other, Peer, :start_cluster, [ClusterTest.AppPy, nodes, [agent]], 60_000)

    :ok =
      :erpc.call(
        other,
        Cluster,
        :await_members,
        [ClusterTest.AppPy, @agent, :all, 30_000],
        35_000
      )

    # The other node's declaration replaced nothing: the same agent processes serve both.
    assert Pynode.members(@cluster, @agent) == members
    assert :erpc.call(other, Pynode, :members, [ClusterTest.AppPy, @agent]) == members

    # Runs in flight from here while the other Elixir node goes away (as in a deploy).
    slow = slow_model(self(), 1_000)

    runs =
      for _ <- 1..6,
          do: Task.async(fn -> Pynode.run(@agent, "hi", model: slow, timeout: 10_000) end)

    receive_n(:in_model, 6, 10_000)
    :ok = :peer.stop(peer)

    for run <- runs do
      assert {:ok, %Result{output: "slow answer"}} = Task.await(run, 15_000)
    end

    assert Pynode.members(@cluster, @agent) == members
    assert {:ok, %Result{}} = Pynode.run(@agent, "still here")
  end

  test "a drain request under a steady stream of runs fails none", %{nodes: nodes} do
    node = Enum.at(nodes, 1)
    pynode = pynode_of(node)
    os_pid = Pynode.os_pid(pynode)
    load = start_load(6, model: slow_model(self(), 50), timeout: 10_000)
    receive_n(:in_model, 30, 10_000)

    assert :ok = GenServer.call({:pynode, node}, :drain)
    # It left the groups at once; its runs in flight end; it exits and is started again.
    assert eventually(
             fn -> Enum.all?(Pynode.members(@cluster, @agent), &(node(&1) != node)) end,
             50,
             20
           )

    assert eventually(fn -> Pynode.os_pid(pynode) not in [nil, os_pid] end, 150, 100)
    :ok = Cluster.await_members(@cluster, @agent, :all, 30_000)
    flush(:in_model)
    receive_n(:in_model, 30, 10_000)

    results = stop_load(load)
    failed = for {{:error, _} = error, _ms} <- results, do: error
    assert failed == []
    assert length(results) > 60
    served = results |> Enum.map(fn {{:ok, r}, _} -> r.node end) |> Enum.uniq()
    assert node in served
  end

  test "a rolling restart under a steady stream of runs fails none", %{nodes: nodes} do
    os_pids = for {_node, pynode} <- Cluster.pynodes(@cluster), do: Pynode.os_pid(pynode)
    load = start_load(6, model: slow_model(self(), 50), timeout: 10_000)
    receive_n(:in_model, 30, 10_000)
    started = System.monotonic_time(:millisecond)
    assert :ok = Cluster.rolling_restart(@cluster, timeout: 30_000)
    took = System.monotonic_time(:millisecond) - started
    results = stop_load(load)

    failed = for {{:error, _} = error, _ms} <- results, do: error
    assert failed == []
    assert length(results) > 60

    new_os_pids = for {_node, pynode} <- Cluster.pynodes(@cluster), do: Pynode.os_pid(pynode)
    assert Enum.all?(Enum.zip(os_pids, new_os_pids), fn {old, new} -> old != new end)
    for pid <- os_pids, do: refute(alive_os_pid?(pid))

    assert @cluster |> Pynode.members(@agent) |> Enum.map(&node/1) |> Enum.sort() ==
             Enum.sort(nodes)

    IO.puts(
      "\n[figure] rolling restart of 3 nodes: #{took} ms, #{length(results)} runs, 0 failed"
    )
  end

  test "the :pg scope restarted on this node: the members are back within about 1 s" do
    members = Pynode.members(@cluster, @agent)
    :ok = Pynode.subscribe(@cluster)
    assert_receive {:pynode, :members, @agent, ^members}
    scope = Process.whereis(:pynode_agents)
    killed_at = System.monotonic_time(:millisecond)
    Process.exit(scope, :kill)

    assert_receive {:pynode, :members, @agent, []}, 1_000

    back =
      eventually(
        fn ->
          if length(Pynode.members(@cluster, @agent)) == 3,
            do: System.monotonic_time(:millisecond)
        end,
        150,
        10
      )

    assert back, "the members were not back 1.5 s after the scope restarted"
    assert Process.whereis(:pynode_agents) not in [nil, scope]
    # The same agent processes: only the scope restarted.
    assert Enum.sort(Pynode.members(@cluster, @agent)) == members
    assert_receive {:pynode, :members, @agent, ^members}, 1_000
    :ok = Pynode.unsubscribe(@cluster)
    IO.puts("\n[figure] :pg scope restarted: the 3 members back after #{back - killed_at} ms")
    assert back - killed_at <= 1_500
  end

  test "a Pynode child's stop drains its node: runs end with their results before SIGKILL" do
    me = self()
    node = unique_node("drainstop")
    # --drain-timeout 3 s (a second under :stop_timeout): the short run ends, the long one is
    # cancelled with a result, and the node exits before the SIGKILL at 4 s.
    opts = [name: ClusterTest.Lone, node: node, start: start_opts(), stop_timeout: 4_000]
    start_supervised!({Pynode, opts})
    :ok = Pynode.await_ready(ClusterTest.Lone, 60_000)
    # An agent with no owner: it stays while the node runs.
    {:ok, :lone} = GenServer.call({:pynode, node}, {:create_agent, :lone, %{model: "test"}})
    os_pid = Pynode.os_pid(ClusterTest.Lone)

    short = Task.async(fn -> Pynode.run({:lone, node}, "hi", model: slow_model(me, 500)) end)
    long = Task.async(fn -> Pynode.run({:lone, node}, "hi", model: slow_model(me, 8_000)) end)
    receive_n(:in_model, 2, 10_000)

    started = System.monotonic_time(:millisecond)
    :ok = stop_supervised(ClusterTest.Lone)
    took = System.monotonic_time(:millisecond) - started

    assert {:ok, %Result{output: "slow answer"}} = Task.await(short, 1_000)
    assert {:error, %Error{kind: :cancelled}} = Task.await(long, 1_000)
    assert took < 4_000, "the stop took #{took} ms: the node was killed"
    refute alive_os_pid?(os_pid)
  end
end
