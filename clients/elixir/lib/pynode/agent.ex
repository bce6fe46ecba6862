defmodule Pynode.Agent do
  @moduledoc """
  An agent on the Python node, as a child of your supervision tree.

      children = [
        {Pynode, name: MyApp.Py, node: :"py@127.0.0.1", start: [cmd: "pynode"]},
        {Pynode.Agent,
         pynode: MyApp.Py,
         name: :assistant,
         spec: %{model: "openai:gpt-4o", instructions: "Be brief."},
         tools: [Pynode.Tool.new(name: "stock", parameters: [item: :string], fun: &MyApp.stock/1)]}
      ]

  It makes sure the agent exists on the node (created with `if_exists: :replace` by default, owned
  by this process so the node deletes it when the process goes), and creates it again every time
  the node comes back. Runs name it by its name: `Pynode.run(:assistant, "Hello")`. A run started
  while the node is away gets `{:error, %Pynode.Error{kind: :nodedown}}` at once. When this process
  stops, the node deletes the agent (this process owns it), so stopping takes no call to the node.

  An agent's name is scoped to its `Pynode`: two `Pynode` children (two Python nodes) may each host
  an `:assistant`. A run then says which with the `:pynode` run option
  (`Pynode.run(:assistant, "Hi", pynode: MyApp.Py)`); without it, a name hosted by more than one
  is a `:bad_request` error, never a guess.

  ## On a cluster

  Given a `Pynode.Cluster` (`pynode: MyApp.Py`, the cluster's `:name`), the agent is created on
  every node of the cluster, each time that node comes up, and each run goes to one of those
  agents (see `Pynode.Cluster`). It is ready (`await_ready/2`) as soon as one node has it;
  `Pynode.Cluster.await_members/4` waits for more. A node that cannot create it is tried again
  every `:retry_interval` while the others serve.

  An app that runs on several BEAM nodes declares the agent on each: with the same spec, the
  Python node shares it between their `Pynode.Agent` processes instead of replacing it, and deletes
  it when the last of them has gone. One BEAM node stopping leaves the others' runs alone.

  ## Options

    * `:pynode` - the `Pynode` child (its `:name`) the agent lives on, or a `Pynode.Cluster`
      (required)
    * `:name` - the agent's name, an atom: its registered name on the node (required)
    * `:spec` - the agent spec (docs/protocol.md section 3), a map with `:model` (required)
    * `:tools` - `Pynode.Tool`s added to the spec's tools; they must be `{Module, :function}`
      handlers (or `&Module.function/1`), which the node calls on this node
    * `:output` - a keyword spec or JSON Schema for structured output (the spec's `output_schema`)
    * `:if_exists` - `:replace` (default), `:keep` or `:error`
    * `:retry_interval` - milliseconds between attempts when creating the agent fails (default 1 s)
    * `:create_timeout` - milliseconds to wait for the node's answer to `create_agent` (default
      30 s); the process serves its callers meanwhile, and a timeout is one more failed attempt

  The `{Module, :function}` tools and instructions run on this node (the agent's home node).
  """

  use GenServer
  require Logger

  alias Pynode.{Call, Error}

  @doc false
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    # A tool the node cannot call (a closure) fails here, before any child of the tree starts.
    _ = spec(Keyword.put_new(opts, :tools, []))

    %{
      id: {__MODULE__, Keyword.get(opts, :pynode), Keyword.fetch!(opts, :name)},
      start: {__MODULE__, :start_link, [opts]}
    }
  end

  @doc "Starts the agent's process (see the module doc for the options)."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    opts =
      Keyword.validate!(opts, [
        :pynode,
        :name,
        :spec,
        :output,
        tools: [],
        if_exists: :replace,
        retry_interval: 1_000,
        create_timeout: 30_000
      ])

    name = Keyword.fetch!(opts, :name)
    unless is_atom(name), do: raise(ArgumentError, "the agent's :name must be an atom")
    _ = Keyword.fetch!(opts, :pynode)
    GenServer.start_link(__MODULE__, Keyword.put(opts, :spec, spec(opts)))
  end

  @doc """
  Waits until the agent exists on a connected node (for a cluster's agent: on at least one node of
  it): `:ok`, or `{:error, :timeout}`.

  `opts` is a timeout in milliseconds (default 30 000) or a keyword list with `:timeout` and
  `:pynode` (the `Pynode` child, needed when more than one hosts an agent of that name).
  Raises `ArgumentError` when no `Pynode.Agent` of that name is running.
  """
  @spec await_ready(atom(), timeout() | [timeout: timeout(), pynode: Pynode.pynode()]) ::
          :ok | {:error, :timeout}
  def await_ready(name, opts \\ 30_000) do
    opts = if is_list(opts), do: opts, else: [timeout: opts]
    opts = Keyword.validate!(opts, [:pynode, timeout: 30_000])

    case lookup(name, opts[:pynode]) do
      {:ok, {pid, _value}} ->
        try do
          GenServer.call(pid, :await_ready, opts[:timeout])
        catch
          :exit, {:timeout, _} -> {:error, :timeout}
        end

      {:error, %Error{message: message}} ->
        raise ArgumentError, message
    end
  end

  @doc false
  # `{name, node}` of a ready agent, from its name (and its Pynode, when several host the name)
  # or from `{name, node}`; `{:cluster, info, name}` for an agent of a Pynode.Cluster (a
  # Pynode.Agent's, or any agent of that name with `pynode: cluster`).
  @spec resolve(Pynode.agent(), Pynode.pynode() | nil) ::
          {:ok, {atom(), node()}}
          | {:cluster, Pynode.Cluster.info(), atom()}
          | {:error, Error.t()}
  def resolve(agent, pynode \\ nil)
  def resolve({name, node} = dest, _pynode) when is_atom(name) and is_atom(node), do: {:ok, dest}

  def resolve(name, nil) when is_atom(name) do
    case lookup(name, nil) do
      {:ok, {_pid, %{cluster: cluster}}} -> {:cluster, cluster, name}
      found -> ready_agent(name, found)
    end
  end

  def resolve(name, pynode) when is_atom(name) do
    case Pynode.Cluster.lookup(pynode) do
      {:ok, cluster} -> {:cluster, cluster, name}
      :error -> ready_agent(name, lookup(name, pynode))
    end
  end

  defp ready_agent(name, found) do
    case found do
      {:ok, {_pid, %{ready: true, node: node}}} ->
        {:ok, {name, node}}

      {:ok, {_pid, %{node: node}}} ->
        {:error,
         Error.nodedown(
           node,
           "is not connected, or the agent #{inspect(name)} is not created yet"
         )}

      {:error, error} ->
        {:error, error}
    end
  end

  # Agent names are scoped to their Pynode: the registry key is {:agent, pynode, name}.
  defp lookup(name, nil) do
    case Registry.select(Pynode.Registry, [
           {{{:agent, :"$1", name}, :"$2", :"$3"}, [], [{{:"$1", :"$2", :"$3"}}]}
         ]) do
      [{_pynode, pid, value}] ->
        {:ok, {pid, value}}

      [] ->
        {:error, not_running(name)}

      several ->
        hosts = several |> Enum.map(&inspect(elem(&1, 0))) |> Enum.sort() |> Enum.join(", ")

        {:error,
         %Error{
           kind: :bad_request,
           message:
             "more than one Pynode hosts an agent named #{inspect(name)} (#{hosts}): " <>
               "say which with the pynode: option"
         }}
    end
  end

  defp lookup(name, pynode) do
    case Registry.lookup(Pynode.Registry, {:agent, pynode, name}) do
      [{pid, value}] -> {:ok, {pid, value}}
      [] -> {:error, not_running(name, pynode)}
    end
  end

  defp not_running(name),
    do: %Error{kind: :unknown_agent, message: "no Pynode.Agent named #{inspect(name)} is running"}

  defp not_running(name, pynode),
    do: %Error{
      kind: :unknown_agent,
      message: "no Pynode.Agent named #{inspect(name)} is running on #{inspect(pynode)}"
    }

  defp spec(opts) do
    spec = Map.new(Keyword.fetch!(opts, :spec))

    spec =
      if Map.has_key?(spec, :model),
        do: Map.update!(spec, :model, &Pynode.Test.model_term/1),
        else: spec

    tools = Enum.map(opts[:tools], &Pynode.Tool.to_agent_spec(Pynode.Tool.from!(&1)))

    spec =
      if tools == [],
        do: spec,
        else: Map.update(spec, :tools, tools, &(&1 ++ tools))

    case opts[:output] do
      nil -> spec
      output -> Map.put(spec, :output_schema, Pynode.Schema.to_json_schema(output))
    end
  end

  ## GenServer

  # The state keeps each node's part in `nodes`: whether it is up, the create_agent request in
  # flight there, and whether the agent exists there. A lone Pynode is a cluster of one node.

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    name = opts[:name]
    pynode = opts[:pynode]

    {nodes, value, cluster?} =
      case Pynode.Cluster.lookup(pynode) do
        {:ok, cluster} ->
          {cluster.nodes, %{cluster: cluster, ready: false}, true}

        :error ->
          {node, _status} = GenServer.call(pynode, :info)
          {[node], %{node: node, ready: false}, false}
      end

    # A restarted Pynode child has no subscribers: this process then restarts too, and
    # subscribes. A cluster's restarted process is subscribed to again (see handle_message/2).
    monitor = Process.monitor(GenServer.whereis(pynode))

    case Registry.register(Pynode.Registry, {:agent, pynode, name}, value) do
      {:ok, _} ->
        :ok = GenServer.call(pynode, {:subscribe, self()})

        {:ok,
         %{
           name: name,
           pynode: pynode,
           nodes: Map.new(nodes, &{&1, %{up: false, creating: nil, ready: false}}),
           spec: opts[:spec],
           if_exists: opts[:if_exists],
           retry_interval: opts[:retry_interval],
           create_timeout: opts[:create_timeout],
           ready: false,
           waiters: [],
           cluster?: cluster?,
           monitor: monitor
         }}

      {:error, {:already_registered, pid}} ->
        {:stop, {:already_started, pid}}
    end
  end

  @impl true
  def handle_call(:await_ready, _from, %{ready: true} = state), do: {:reply, :ok, state}

  def handle_call(:await_ready, from, state),
    do: {:noreply, %{state | waiters: [from | state.waiters]}}

  @impl true
  # The create_agent requests are in flight while this process goes on serving: a reply (or a
  # failure) arrives as a message like any other.
  def handle_info(message, state) do
    case create_reply(message, state) do
      {node, reply} ->
        state = update_node(state, node, &cancel_create/1)
        {:noreply, created(reply, node, state)}

      nil ->
        handle_message(message, state)
    end
  end

  defp create_reply(message, state) do
    Enum.find_value(state.nodes, fn
      {node, %{creating: {request, _timer}}} ->
        case Call.check_response(message, request, {:pynode, node}) do
          :no_reply -> nil
          reply -> {node, reply}
        end

      _ ->
        nil
    end)
  end

  # A node that has the agent as far as this process knows (it was created there, and no :down
  # came since) is only asked to keep it: this is a cluster's process come back, whose events in
  # between were lost; a node that went away meanwhile does not have it, and gets it.
  defp handle_message({:pynode, :up, node}, state) when is_map_key(state.nodes, node) do
    if_exists = if state.nodes[node].ready, do: :keep, else: state.if_exists
    {:noreply, state |> update_node(node, &%{&1 | up: true}) |> create(node, if_exists)}
  end

  defp handle_message({:pynode, :down, node}, state) when is_map_key(state.nodes, node) do
    state = update_node(state, node, &(&1 |> cancel_create() |> Map.merge(%{up: false})))
    {:noreply, set_ready(state, node, false)}
  end

  defp handle_message({:create, node}, state) when is_map_key(state.nodes, node) do
    case state.nodes[node] do
      %{up: true, ready: false, creating: nil} -> {:noreply, create(state, node)}
      _ -> {:noreply, state}
    end
  end

  defp handle_message({:create_timeout, node, request}, state)
       when is_map_key(state.nodes, node) do
    case state.nodes[node] do
      %{creating: {^request, _}} ->
        error = %Error{
          kind: :timeout,
          message: "#{node} did not answer create_agent within #{state.create_timeout} ms"
        }

        {:noreply, created({:error, error}, node, update_node(state, node, &cancel_create/1))}

      _ ->
        {:noreply, state}
    end
  end

  defp handle_message({:EXIT, _pid, reason}, state), do: {:stop, reason, state}

  # The cluster's process restarted: the nodes still have the agent (this process owns it), so
  # it is not deleted with a restart of this process; the new cluster process is subscribed to.
  defp handle_message(
         {:DOWN, mon, :process, _pid, _reason},
         %{monitor: mon, cluster?: true} = state
       ) do
    send(self(), :resubscribe)

    nodes =
      Map.new(state.nodes, fn {node, part} -> {node, %{cancel_create(part) | up: false}} end)

    {:noreply, %{state | nodes: nodes, monitor: nil}}
  end

  defp handle_message({:DOWN, mon, :process, _pid, reason}, %{monitor: mon} = state),
    do: {:stop, {:pynode_child_exited, reason}, set_all_unready(state)}

  defp handle_message(:resubscribe, %{monitor: nil} = state) do
    with pid when is_pid(pid) <- GenServer.whereis(state.pynode),
         monitor = Process.monitor(pid),
         :ok <- resubscribe(state.pynode, monitor) do
      {:noreply, %{state | monitor: monitor}}
    else
      _ ->
        Process.send_after(self(), :resubscribe, 50)
        {:noreply, state}
    end
  end

  defp handle_message(_other, state), do: {:noreply, state}

  defp resubscribe(pynode, monitor) do
    GenServer.call(pynode, {:subscribe, self()})
  catch
    :exit, _ ->
      Process.demonitor(monitor, [:flush])
      :error
  end

  # Nothing to do on the nodes: this process owns the agent, so each node deletes it when this
  # process exits, however it exits.
  @impl true
  def terminate(_reason, _state), do: :ok

  defp update_node(state, node, fun), do: %{state | nodes: Map.update!(state.nodes, node, fun)}

  defp create(state, node, if_exists \\ nil) do
    state = update_node(state, node, &cancel_create/1)

    request =
      {:create_agent, state.name, state.spec,
       %{if_exists: if_exists || state.if_exists, owner: self()}}

    id = Call.send_request({:pynode, node}, request)
    timer = Process.send_after(self(), {:create_timeout, node, id}, state.create_timeout)
    update_node(state, node, &%{&1 | creating: {id, timer}})
  end

  defp cancel_create(%{creating: nil} = part), do: part

  defp cancel_create(%{creating: {id, timer}} = part) do
    Call.abandon_request(id)
    Process.cancel_timer(timer)
    %{part | creating: nil}
  end

  defp created({:ok, _name}, node, state) do
    Logger.info("pynode: agent #{inspect(state.name)} created on #{node}")
    set_ready(state, node, true)
  end

  defp created({:error, %Error{} = error}, node, state) do
    Logger.error(
      "pynode: could not create agent #{inspect(state.name)} on #{node}: " <>
        Exception.message(error) <> "; trying again in #{state.retry_interval} ms"
    )

    Process.send_after(self(), {:create, node}, state.retry_interval)
    set_ready(state, node, false)
  end

  # The agent is ready while at least one node has it.
  defp set_ready(state, node, ready) do
    state = update_node(state, node, &%{&1 | ready: ready})
    publish(state, Enum.any?(state.nodes, fn {_, part} -> part.ready end))
  end

  defp set_all_unready(state), do: publish(state, false)

  defp publish(%{ready: ready} = state, ready), do: state

  defp publish(state, ready) do
    {_, _} =
      Registry.update_value(
        Pynode.Registry,
        {:agent, state.pynode, state.name},
        &%{&1 | ready: ready}
      )

    if ready do
      for from <- state.waiters, do: GenServer.reply(from, :ok)
      %{state | ready: true, waiters: []}
    else
      %{state | ready: false}
    end
  end
end
