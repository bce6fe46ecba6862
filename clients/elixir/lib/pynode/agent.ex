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

  ## Options

    * `:pynode` - the `Pynode` child (its `:name`) the agent lives on (required)
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
  Waits until the agent exists on a connected node: `:ok`, or `{:error, :timeout}`.

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
  # or from `{name, node}`.
  @spec resolve(Pynode.agent(), Pynode.pynode() | nil) ::
          {:ok, {atom(), node()}} | {:error, Error.t()}
  def resolve(agent, pynode \\ nil)
  def resolve({name, node} = dest, _pynode) when is_atom(name) and is_atom(node), do: {:ok, dest}

  def resolve(name, pynode) when is_atom(name) do
    case lookup(name, pynode) do
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

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    name = opts[:name]
    pynode = opts[:pynode]
    {node, _status} = GenServer.call(pynode, :info)
    # A restarted Pynode child has no subscribers: this process then restarts too, and subscribes.
    Process.monitor(GenServer.whereis(pynode))

    case Registry.register(Pynode.Registry, {:agent, pynode, name}, %{node: node, ready: false}) do
      {:ok, _} ->
        :ok = GenServer.call(pynode, {:subscribe, self()})

        {:ok,
         %{
           name: name,
           pynode: pynode,
           node: node,
           spec: opts[:spec],
           if_exists: opts[:if_exists],
           retry_interval: opts[:retry_interval],
           create_timeout: opts[:create_timeout],
           creating: nil,
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
  # The create_agent request is in flight while this process goes on serving: its reply (or its
  # failure) arrives as a message like any other.
  def handle_info(message, %{creating: {request, timer}} = state) do
    case Call.check_response(message, request, {:pynode, state.node}) do
      :no_reply ->
        handle_message(message, state)

      reply ->
        Process.cancel_timer(timer)
        {:noreply, created(reply, %{state | creating: nil})}
    end
  end

  def handle_info(message, state), do: handle_message(message, state)

  defp handle_message({:pynode, :up, node}, %{node: node} = state),
    do: {:noreply, create(%{state | up: true})}

  defp handle_message({:pynode, :down, node}, %{node: node} = state),
    do: {:noreply, state |> cancel_create() |> Map.put(:up, false) |> set_ready(false)}

  defp handle_message(:create, %{up: true, ready: false, creating: nil} = state),
    do: {:noreply, create(state)}

  defp handle_message(:create, state), do: {:noreply, state}

  defp handle_message({:create_timeout, request}, %{creating: {request, _}} = state) do
    error = %Error{
      kind: :timeout,
      message: "#{state.node} did not answer create_agent within #{state.create_timeout} ms"
    }

    {:noreply, created({:error, error}, cancel_create(state))}
  end

  defp handle_message({:EXIT, _pid, reason}, state), do: {:stop, reason, state}

  defp handle_message({:DOWN, _mon, :process, _pid, reason}, state),
    do: {:stop, {:pynode_child_exited, reason}, set_ready(state, false)}

  defp handle_message(_other, state), do: {:noreply, state}

  # Nothing to do on the node: this process owns the agent, so the node deletes it when this
  # process exits, however it exits.
  @impl true
  def terminate(_reason, _state), do: :ok

  defp create(state) do
    state = cancel_create(state)

    request =
      {:create_agent, state.name, state.spec, %{if_exists: state.if_exists, owner: self()}}

    id = Call.send_request({:pynode, state.node}, request)
    timer = Process.send_after(self(), {:create_timeout, id}, state.create_timeout)
    %{state | creating: {id, timer}}
  end

  defp cancel_create(%{creating: nil} = state), do: state

  defp cancel_create(%{creating: {id, timer}} = state) do
    Call.abandon_request(id)
    Process.cancel_timer(timer)
    %{state | creating: nil}
  end

  defp created({:ok, _name}, state) do
    Logger.info("pynode: agent #{inspect(state.name)} created on #{state.node}")
    set_ready(state, true)
  end

  defp created({:error, %Error{} = error}, state) do
    Logger.error(
      "pynode: could not create agent #{inspect(state.name)} on #{state.node}: " <>
        Exception.message(error) <> "; trying again in #{state.retry_interval} ms"
    )

    Process.send_after(self(), :create, state.retry_interval)
    set_ready(state, false)
  end

  defp set_ready(state, ready) do
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
