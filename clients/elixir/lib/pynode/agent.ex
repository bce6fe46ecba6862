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
  while the node is away gets `{:error, %Pynode.Error{kind: :nodedown}}` at once.

  ## Options

    * `:pynode` - the `Pynode` child (its `:name`) the agent lives on (required)
    * `:name` - the agent's name, an atom: its registered name on the node (required)
    * `:spec` - the agent spec (PROTOCOL.md section 3), a map with `:model` (required)
    * `:tools` - `Pynode.Tool`s added to the spec's tools; they must be `{Module, :function}`
      handlers (or `&Module.function/1`), which the node calls on this node
    * `:output` - a keyword spec or JSON Schema for structured output (the spec's `output_schema`)
    * `:if_exists` - `:replace` (default), `:keep` or `:error`
    * `:retry_interval` - milliseconds between attempts when creating the agent fails (default 1 s)

  The `{Module, :function}` tools and instructions run on this node (the agent's home node).
  """

  use GenServer
  require Logger

  alias Pynode.{Call, Error}

  @doc false
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{id: {__MODULE__, Keyword.fetch!(opts, :name)}, start: {__MODULE__, :start_link, [opts]}}
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
        retry_interval: 1_000
      ])

    name = Keyword.fetch!(opts, :name)
    unless is_atom(name), do: raise(ArgumentError, "the agent's :name must be an atom")
    _ = Keyword.fetch!(opts, :pynode)
    GenServer.start_link(__MODULE__, Keyword.put(opts, :spec, spec(opts)))
  end

  @doc """
  Waits until the agent exists on a connected node: `:ok`, or `{:error, :timeout}`.
  Raises `ArgumentError` when no `Pynode.Agent` of that name is running.
  """
  @spec await_ready(atom(), timeout()) :: :ok | {:error, :timeout}
  def await_ready(name, timeout \\ 30_000) do
    case Registry.lookup(Pynode.Registry, {:agent, name}) do
      [{pid, _}] ->
        try do
          GenServer.call(pid, :await_ready, timeout)
        catch
          :exit, {:timeout, _} -> {:error, :timeout}
        end

      [] ->
        raise ArgumentError, "no Pynode.Agent named #{inspect(name)} is running"
    end
  end

  @doc false
  # `{name, node}` of a ready agent, from its name or from `{name, node}`.
  @spec resolve(Pynode.agent()) :: {:ok, {atom(), node()}} | {:error, Error.t()}
  def resolve({name, node} = dest) when is_atom(name) and is_atom(node), do: {:ok, dest}

  def resolve(name) when is_atom(name) do
    case Registry.lookup(Pynode.Registry, {:agent, name}) do
      [{_pid, %{ready: true, node: node}}] ->
        {:ok, {name, node}}

      [{_pid, %{node: node}}] ->
        {:error,
         Error.nodedown(
           node,
           "is not connected, or the agent #{inspect(name)} is not created yet"
         )}

      [] ->
        {:error,
         %Error{
           kind: :unknown_agent,
           message: "no Pynode.Agent named #{inspect(name)} is running"
         }}
    end
  end

  defp spec(opts) do
    spec = Map.new(Keyword.fetch!(opts, :spec))
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

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    name = opts[:name]
    {node, _status} = GenServer.call(opts[:pynode], :info)
    # A restarted Pynode child has no subscribers: this process then restarts too, and subscribes.
    Process.monitor(GenServer.whereis(opts[:pynode]))

    case Registry.register(Pynode.Registry, {:agent, name}, %{node: node, ready: false}) do
      {:ok, _} ->
        :ok = GenServer.call(opts[:pynode], {:subscribe, self()})

        {:ok,
         %{
           name: name,
           node: node,
           spec: opts[:spec],
           if_exists: opts[:if_exists],
           retry_interval: opts[:retry_interval],
           ready: false,
           up: false,
           waiters: []
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
  def handle_info({:pynode, :up, node}, %{node: node} = state),
    do: {:noreply, create(%{state | up: true})}

  def handle_info({:pynode, :down, node}, %{node: node} = state),
    do: {:noreply, set_ready(%{state | up: false}, false)}

  def handle_info(:create, %{up: true, ready: false} = state), do: {:noreply, create(state)}
  def handle_info(:create, state), do: {:noreply, state}
  def handle_info({:EXIT, _pid, reason}, state), do: {:stop, reason, state}

  def handle_info({:DOWN, _mon, :process, _pid, reason}, state),
    do: {:stop, {:pynode_child_exited, reason}, set_ready(state, false)}

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, %{ready: true} = state) do
    _ = Call.call({:pynode, state.node}, {:delete_agent, state.name}, 5_000)
    :ok
  end

  def terminate(_reason, _state), do: :ok

  defp create(state) do
    request =
      {:create_agent, state.name, state.spec, %{if_exists: state.if_exists, owner: self()}}

    case Call.call({:pynode, state.node}, request, 30_000) do
      {:ok, _name} ->
        Logger.info("pynode: agent #{inspect(state.name)} created on #{state.node}")
        set_ready(state, true)

      {:error, %Error{} = error} ->
        Logger.error(
          "pynode: could not create agent #{inspect(state.name)} on #{state.node}: " <>
            Exception.message(error) <> "; trying again in #{state.retry_interval} ms"
        )

        Process.send_after(self(), :create, state.retry_interval)
        set_ready(state, false)
    end
  end

  defp set_ready(state, ready) do
    {_, _} = Registry.update_value(Pynode.Registry, {:agent, state.name}, &%{&1 | ready: ready})

    if ready do
      for from <- state.waiters, do: GenServer.reply(from, :ok)
      %{state | ready: true, waiters: []}
    else
      %{state | ready: false}
    end
  end
end
