defmodule Pynode.Cluster do
  @moduledoc """
  Several Python nodes serving the same agents, as one child of your supervision tree.

      children = [
        {Pynode.Cluster, name: MyApp.Py, start: [count: 3, cmd: "pynode"]},
        {Pynode.Agent, pynode: MyApp.Py, name: :assistant, spec: %{model: "openai:gpt-4o"}}
      ]

      Supervisor.start_link(children, strategy: :rest_for_one)

      {:ok, %Pynode.Result{node: served_by}} = Pynode.run(:assistant, "Hello")

  A cluster is a `Pynode` child for each Python node (each started, restarted, or connected to and
  reconnected, exactly as a lone `Pynode` is), and OTP's `:pg` scope in which those nodes' agents
  are members (docs/protocol.md section 9): `:pg.get_members(:pynode_agents, :assistant)` lists
  the agent processes named `:assistant` on every connected Python node. The cluster starts that
  scope unless a process of that name runs already.

  A `Pynode.Agent` given the cluster (`pynode: MyApp.Py`) creates its agent on every node of it,
  and again on every node that comes back (a restarted node, a reconnected one). A run of that
  agent (`Pynode.run/3`, `Pynode.stream/3`, `Pynode.start_run/3`) goes to one of its `:pg`
  members, and to another one at once when the first did not take it; see "Runs" below. A
  Python-defined agent that every node has (`--agents DIR`) is run the same way with the
  `pynode: MyApp.Py` run option.

  ## Options

    * `:name` - the cluster's name, an atom (required): the `pynode:` of `Pynode.Agent` and of
      runs, and the first argument of the functions here and of `Pynode.subscribe/1`,
      `Pynode.await_ready/2` and `Pynode.members/2`
    * `:nodes` - the Python nodes' names, such as `[:"py1@10.0.0.5", :"py2@10.0.0.6"]`. Without
      `:start`, the cluster connects to these nodes, which run already, and reconnects to each
      with backoff when it goes away. With `:start`, they are the names of the nodes it starts
    * `:start` - start the nodes as OS processes: `[count: n, cmd: "pynode", args: [...], env:
      [...], cd: dir, log_level: level]`, each node as `Pynode`'s `:start` option says. `count`
      nodes are started (default: one for each of `:nodes`), named, when `:nodes` is not given,
      after this node's name as `Pynode` names one, with the cluster's name and the node's
      index added: `:"shop_py_myapp_py_1@myhost"`, `:"shop_py_myapp_py_2@myhost"`, ...
    * `:scope` - the `:pg` scope, an atom (default `:pynode_agents`, the nodes' default). The
      nodes the cluster starts are given `--pg-scope NAME` when it is another; nodes it connects
      to must have been started with it
    * `:pynode` - more options for every node's `Pynode` child: `:cookie`, `:client_name`,
      `:backoff_initial`, `:backoff_max`, `:stop_timeout`
    * `:membership` - how the cluster follows the scope for `{:pynode, :members, ...}` events and
      `await_members/4`: `:monitor` (`:pg.monitor_scope/1`, the default on OTP 25.1 and later) or
      `:poll` (the scope read every 200 ms, the default on an older OTP). Runs and `members/2`
      read the scope directly, either way

  Only members on the cluster's own nodes count: another Python node in the same scope (a lone
  `Pynode`, another cluster) is never picked for this cluster's runs.

  ## Runs

  A run of a cluster's agent picks a member of its `:pg` group on the cluster's nodes. The
  `:pick` run option says which: `:random` (the default) spreads runs evenly over the members;
  `:local` picks among the members on the same host as this node (the host part of the node
  names is the same: `app@10.0.0.5` and `py2@10.0.0.5`; no DNS lookup is made), and among all of
  them when none is; a function gets the members (pids) and returns one of them.

  A run that no member has taken goes to another member at once, each member at most once per
  run, all within the run's `:timeout`: the member's process was gone (`noproc`), its node was
  not connected, it was draining (`:draining`: it has left the group but the pick raced with
  that) or it was at its limit of runs (`:overloaded`). A run that a member took and then lost
  with its node (the node was killed, or its connection dropped) ends with
  `{:error, %Pynode.Error{kind: :nodedown}}`: the run may have done some of its work (called a
  tool that charged a card), and only the caller knows whether doing it again is safe. With
  `retry: :always` it is started again on another member; its tools may then run twice, and its
  events start over (`{:retry, error}` comes first). `retry: :never` gives the first member's
  refusal as it is.

  When no member can take the run, because the agent has none or all of them refused, the
  result is `{:error, %Pynode.Error{kind: :nodedown}}` whose message says so and why, such as
  `no member of MyApp.Py took the run of :assistant: py1@h is draining, py2@h is not
  connected`; it is `:overloaded` when every member refused for that reason.

  ## Membership events

  `Pynode.subscribe(MyApp.Py)` sends `{:pynode, :up, node}` and `{:pynode, :down, node}` for each
  node of the cluster (at once for those connected), and `{:pynode, :members, agent, pids}`
  when the members of an agent on the cluster's nodes change (at once for each agent that has
  some): `pids` are all of them now, `[]` when none is left. `:pynode` is the group of the nodes'
  registries: a node is in it while it serves. The events come from `:pg.monitor_scope/1`
  (OTP 25.1 and later); on an OTP without it the cluster polls the scope every 200 ms (see
  `:membership`). When the scope itself restarts, its members are gone until the nodes have
  found the new one (within about 250 ms): subscribers see `[]`, then the members again.

  ## Stopping, draining, rolling restarts

  When the cluster stops, it asks every node it started to drain at once (docs/protocol.md
  section 9), so that the nodes' stops, one after the other, wait for one drain, not for the sum:
  each node leaves its groups, takes no new run, lets the runs in flight end (for its
  `--drain-timeout`, a second under `:stop_timeout`; then they are cancelled and their callers
  get `:cancelled`), and exits. The `Pynode.Agent`s started after the cluster stop before it,
  and the nodes delete their agents (and cancel those agents' runs) as their owners go: the
  drain of a stop lets the runs of Python-defined agents end.

  `drain/3` drains one node, which its `Pynode` child then starts again; `rolling_restart/2`
  does that for every node in turn, each time waiting for the node and the cluster's agents to
  be back before the next one goes, so that runs never lack a member. The agents stay while
  their nodes drain (their owners are alive).
  """

  use Supervisor

  alias Pynode.Cluster.Server

  @typedoc "The `:name` of a `Pynode.Cluster`."
  @type t :: atom()

  @typedoc false
  @type info :: %{name: t(), scope: atom(), nodes: [node()], started: boolean()}

  @doc "A child spec for a `Pynode.Cluster` (see the module doc for the options)."
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: {__MODULE__, Keyword.get(opts, :name)},
      start: {__MODULE__, :start_link, [opts]},
      type: :supervisor,
      shutdown: :infinity
    }
  end

  @doc """
  Starts a cluster (see the module doc for the options).

  Raises `ArgumentError` for options that cannot work: no `:name`, neither `:nodes` nor
  `start: [count: n]`, a `count` that is not the number of `:nodes`, a node name of the other
  mode than this node's.
  """
  @spec start_link(keyword()) :: Supervisor.on_start()
  def start_link(opts) do
    opts =
      Keyword.validate!(opts, [
        :name,
        :nodes,
        :start,
        scope: :pynode_agents,
        pynode: [],
        membership: default_membership()
      ])

    unless opts[:membership] in [:monitor, :poll],
      do: raise(ArgumentError, "Pynode.Cluster's :membership must be :monitor or :poll")

    name = opts[:name]

    unless is_atom(name) and name != nil,
      do: raise(ArgumentError, "Pynode.Cluster needs a :name, an atom, got: #{inspect(name)}")

    unless is_atom(opts[:scope]),
      do: raise(ArgumentError, "Pynode.Cluster's :scope must be an atom")

    pynode_opts =
      Keyword.validate!(opts[:pynode], [
        :cookie,
        :client_name,
        :backoff_initial,
        :backoff_max,
        :stop_timeout
      ])

    {start, nodes} = start_and_nodes(name, opts[:start], opts[:nodes], opts[:scope])
    nodes = Enum.map(nodes, &Pynode.NodeName.resolve/1)

    if Enum.uniq(nodes) != nodes,
      do: raise(ArgumentError, "Pynode.Cluster: a node is named twice in #{inspect(nodes)}")

    Supervisor.start_link(
      __MODULE__,
      {name, opts[:scope], nodes, start, pynode_opts, opts[:membership]}
    )
  end

  defp default_membership do
    if Code.ensure_loaded?(:pg) and function_exported?(:pg, :monitor_scope, 1),
      do: :monitor,
      else: :poll
  end

  defp start_and_nodes(_name, nil, nodes, _scope) when is_list(nodes) and nodes != [],
    do: {nil, nodes}

  defp start_and_nodes(_name, nil, _nodes, _scope),
    do:
      raise(
        ArgumentError,
        "Pynode.Cluster needs nodes: [...] (nodes that run already) or start: [count: n, cmd: ...]"
      )

  defp start_and_nodes(name, start, nodes, scope) do
    start = Keyword.validate!(start, [:count, :cmd, :args, :env, :cd, :log_level])
    {count, start} = Keyword.pop(start, :count)

    nodes =
      case {count, nodes} do
        {nil, [_ | _]} ->
          nodes

        {count, nil} when is_integer(count) and count > 0 ->
          for i <- 1..count, do: Pynode.NodeName.unique("#{slug(name)}_#{i}")

        {count, [_ | _]} when count == length(nodes) ->
          nodes

        _ ->
          raise ArgumentError,
                "Pynode.Cluster: start: [count: n] must be a positive integer, and the number " <>
                  "of nodes: when both are given; got count: #{inspect(count)}, nodes: " <>
                  inspect(nodes)
      end

    {Keyword.put(start, :args, scope_args(start[:args] || [], scope)), nodes}
  end

  defp scope_args(args, scope) do
    args = Enum.map(args, &to_string/1)

    cond do
      "--no-pg" in args ->
        raise ArgumentError,
              "Pynode.Cluster: start: [args: ...] has --no-pg, but a cluster finds its agents " <>
                "through the :pg scope"

      scope == :pynode_agents or Enum.any?(args, &String.starts_with?(&1, "--pg-scope")) ->
        args

      true ->
        ["--pg-scope", Atom.to_string(scope) | args]
    end
  end

  defp slug(name) do
    name
    |> inspect()
    |> String.downcase()
    |> String.replace(~r/[^a-z0-9]+/, "_")
    |> String.trim("_")
  end

  @impl true
  def init({name, scope, nodes, start, pynode_opts, membership}) do
    pynodes =
      for {node, i} <- Enum.with_index(nodes, 1), do: {node, Module.concat(name, "Node#{i}")}

    node_children =
      for {node, child} <- pynodes do
        opts = [name: child, node: node] ++ pynode_opts
        opts = if start, do: Keyword.put(opts, :start, start), else: opts
        Supervisor.child_spec({Pynode, opts}, id: {Pynode, node})
      end

    info = %{name: name, scope: scope, nodes: nodes, started: start != nil}

    children =
      [%{id: :pynode_pg, start: {__MODULE__, :start_scope, [scope]}}] ++
        node_children ++ [{Server, info: info, pynodes: pynodes, membership: membership}]

    # Each part recovers on its own: a restarted scope is found again by the nodes (and by the
    # server), a restarted Pynode child by the server; nothing needs its siblings restarted.
    Supervisor.init(children, strategy: :one_for_one, max_restarts: 10, max_seconds: 10)
  end

  @doc false
  # The scope, unless a process of its name runs already (an application's own): that one is
  # then used and left alone.
  @spec start_scope(atom()) :: {:ok, pid()} | :ignore | {:error, term()}
  def start_scope(scope) do
    case :pg.start_link(scope) do
      {:ok, pid} -> {:ok, pid}
      {:error, {:already_started, _pid}} -> :ignore
      {:error, reason} -> {:error, reason}
    end
  end

  ## Public API

  @doc "The names of the cluster's Python nodes, in the order of `:nodes` (or of their index)."
  @spec nodes(t()) :: [node()]
  def nodes(cluster), do: info!(cluster).nodes

  @doc """
  The `Pynode` child of each node, as `{node, pynode}`: give `pynode` to `Pynode.os_pid/1`,
  `Pynode.info/2`, `Pynode.connected?/1` or `Pynode.drain/2` for that node alone.
  """
  @spec pynodes(t()) :: [{node(), Pynode.pynode()}]
  def pynodes(cluster), do: GenServer.call(cluster, :pynodes)

  @doc """
  The processes of `agent` on the cluster's nodes, from its `:pg` group: one pid for each node
  that has the agent now (`[]` when none has, or while the scope is not running).
  """
  @spec members(t(), atom()) :: [pid()]
  def members(cluster, agent) when is_atom(agent), do: members_of(info!(cluster), agent)

  @doc """
  Waits until `agent` has at least `count` members on the cluster's nodes (`:all`: one on every
  node of the cluster): `:ok`, or `{:error, :timeout}` after `timeout` ms.
  """
  @spec await_members(t(), atom(), pos_integer() | :all, timeout()) :: :ok | {:error, :timeout}
  def await_members(cluster, agent, count \\ :all, timeout \\ 30_000)
      when is_atom(agent) and (count == :all or (is_integer(count) and count > 0)) do
    GenServer.call(cluster, {:await_members, agent, count, timeout}, call_timeout(timeout))
  catch
    :exit, {:timeout, _} -> {:error, :timeout}
  end

  @doc """
  Drains one node of the cluster (docs/protocol.md section 9): it leaves every group at once, so
  no new run picks it, lets its runs in flight end, then exits; the node's `Pynode` child starts
  it again (a node the cluster only connects to must be started again by whoever runs it).
  Returns `:ok`, or `{:error, %Pynode.Error{}}` (`:nodedown` when it is not connected).
  """
  @spec drain(t(), node(), timeout()) :: :ok | {:error, Pynode.Error.t()}
  def drain(cluster, node, timeout \\ 5_000) do
    case List.keyfind(pynodes(cluster), node, 0) do
      {^node, pynode} ->
        Pynode.drain(pynode, timeout)

      nil ->
        raise ArgumentError, "#{inspect(node)} is not a node of the cluster #{inspect(cluster)}"
    end
  end

  @doc """
  Restarts the cluster's nodes one after the other without failing a run: before each node,
  waits until the agents have a member on every node; then drains it (`drain/3`) and waits for
  it to stop, to be started again and connected, and for the agents to be on it again.

  Returns `:ok`, or `{:error, {node, reason}}` for the node where it stopped: `reason` is
  `:timeout` (a step took longer than `:timeout`) or the `Pynode.Error` of the drain request.

  ## Options

    * `:agents` - the agents to wait for (default: the cluster's `Pynode.Agent`s)
    * `:timeout` - milliseconds for each step (default 60 000); the drain itself takes at most
      the nodes' `--drain-timeout` (`:stop_timeout` for the nodes the cluster starts)
  """
  @spec rolling_restart(t(), keyword()) :: :ok | {:error, {node(), :timeout | Pynode.Error.t()}}
  def rolling_restart(cluster, opts \\ []) do
    opts = Keyword.validate!(opts, [:agents, timeout: 60_000])
    agents = opts[:agents] || agents(cluster)
    timeout = opts[:timeout]

    # In a process of its own, whose mailbox the cluster's events may fill: the caller's own
    # subscription (if it has one) and mailbox are left as they are.
    Task.async(fn ->
      :ok = Pynode.subscribe(cluster)

      Enum.reduce_while(pynodes(cluster), :ok, fn {node, pynode}, :ok ->
        case restart_one(cluster, node, pynode, agents, timeout) do
          :ok -> {:cont, :ok}
          {:error, reason} -> {:halt, {:error, {node, reason}}}
        end
      end)
    end)
    |> Task.await(:infinity)
  end

  defp restart_one(cluster, node, pynode, agents, timeout) do
    with :ok <- await_all(cluster, agents, timeout),
         _ = flush_node_events(node),
         :ok <- Pynode.drain(pynode, timeout),
         :ok <- await_event({:pynode, :down, node}, timeout),
         :ok <- await_event({:pynode, :up, node}, timeout) do
      await_all(cluster, agents, timeout)
    end
  end

  defp await_all(cluster, agents, timeout) do
    Enum.reduce_while(agents, :ok, fn agent, :ok ->
      case await_members(cluster, agent, :all, timeout) do
        :ok -> {:cont, :ok}
        error -> {:halt, error}
      end
    end)
  end

  defp await_event(event, timeout) do
    receive do
      ^event -> :ok
    after
      timeout -> {:error, :timeout}
    end
  end

  defp flush_node_events(node) do
    receive do
      {:pynode, event, ^node} when event in [:up, :down] -> flush_node_events(node)
    after
      0 -> :ok
    end
  end

  # The names of the cluster's Pynode.Agents.
  defp agents(cluster) do
    Registry.select(Pynode.Registry, [{{{:agent, cluster, :"$1"}, :_, :_}, [], [:"$1"]}])
    |> Enum.sort()
  end

  defp call_timeout(:infinity), do: :infinity
  defp call_timeout(timeout), do: timeout + 1_000

  ## Internal: used by Pynode, Pynode.Agent and Pynode.Run

  @doc false
  # The cluster's info when `name` is a running cluster, else :error.
  @spec lookup(term()) :: {:ok, info()} | :error
  def lookup(name) when is_atom(name) and name != nil do
    case Registry.lookup(Pynode.Registry, {:cluster, name}) do
      [{_pid, info}] -> {:ok, info}
      [] -> :error
    end
  end

  def lookup(_other), do: :error

  @doc false
  @spec cluster?(term()) :: boolean()
  def cluster?(name), do: lookup(name) != :error

  @doc false
  @spec info!(t()) :: info()
  def info!(cluster) do
    case lookup(cluster) do
      {:ok, info} -> info
      :error -> raise ArgumentError, "#{inspect(cluster)} is not a running Pynode.Cluster"
    end
  end

  @doc false
  # The members of `group` on the cluster's nodes, sorted; [] while the scope is not running.
  @spec members_of(info(), atom()) :: [pid()]
  def members_of(%{scope: scope, nodes: nodes}, group) do
    scope |> :pg.get_members(group) |> Enum.filter(&(node(&1) in nodes)) |> Enum.sort()
  rescue
    # No scope of that name runs (its table is gone): no members.
    ArgumentError -> []
  end
end
