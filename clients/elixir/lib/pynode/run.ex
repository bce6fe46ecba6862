defmodule Pynode.Run do
  @moduledoc """
  A run started with `Pynode.start_run/3`, for GenServers and LiveViews: its messages arrive in
  the process that started it, and `handle_info/2` tells them apart.

      def handle_call({:ask, prompt}, _from, state) do
        {:ok, run} = Pynode.start_run(:assistant, prompt, timeout: 30_000)
        {:reply, :ok, %{state | run: run}}
      end

      def handle_info(msg, %{run: run} = state) when run != nil do
        case Pynode.Run.handle_info(msg, run) do
          {:event, {:text_delta, text}} -> {:noreply, append(state, text)}
          {:event, _other} -> {:noreply, state}
          {:done, %Pynode.Result{} = result} -> {:noreply, %{state | run: nil, result: result}}
          {:error, %Pynode.Error{} = error} -> {:noreply, %{state | run: nil, error: error}}
          :unknown -> {:noreply, state}
        end
      end

  A run whose node or agent goes away ends as `{:error, %Pynode.Error{kind: :nodedown}}` (or
  `:unknown_agent`), never before its real final result: a result already received wins. When the
  run's `:timeout` passes, `handle_info/2` returns `{:error, %Pynode.Error{kind: :timeout}}` and the
  run is cancelled on the node; its late messages are taken out of the mailbox.
  """

  alias Pynode.{Error, Result, ToolServer}

  @typedoc "A run in flight."
  @type t :: %__MODULE__{
          ref: reference(),
          agent: {atom(), node()},
          monitor: reference(),
          tool_server: pid() | nil,
          deadline: integer(),
          timeout: timeout(),
          timer: reference() | nil,
          owner: pid()
        }

  @typedoc "A stream event of a run (docs/protocol.md section 5)."
  @type event ::
          {:text_delta, String.t()}
          | {:output_delta, map()}
          | {:tool_call, String.t(), map(), String.t()}
          | {:tool_result, String.t(), term(), String.t()}
          | {:tool_error, String.t(), String.t(), String.t()}

  @enforce_keys [:ref, :agent, :monitor, :deadline, :owner]
  defstruct [:ref, :agent, :monitor, :tool_server, :deadline, :timeout, :timer, :owner]

  # How long a cancelled run may take to send its final result, which is then dropped.
  @drain_ms 5_000

  @doc """
  Classifies a message received by the process that started `run`.

  Returns `{:event, event}`, `{:done, result}` and `{:error, error}` for the run's messages (the
  last two end it), or `:unknown` for any other message.
  """
  @spec handle_info(term(), t()) ::
          {:event, event()} | {:done, Result.t()} | {:error, Error.t()} | :unknown
  def handle_info({:pynode_event, ref, event}, %__MODULE__{ref: ref}), do: {:event, event}

  def handle_info({:pynode_result, ref, result}, %__MODULE__{ref: ref} = run) do
    finish(run)
    outcome(result)
  end

  def handle_info({:DOWN, mon, :process, _, reason}, %__MODULE__{monitor: mon} = run),
    do: went_away(run, reason)

  def handle_info({:pynode_timeout, ref}, %__MODULE__{ref: ref} = run) do
    abandon(run)
    {:error, timeout_error(run)}
  end

  def handle_info(_message, %__MODULE__{}), do: :unknown

  ## Internal: used by Pynode

  @doc false
  @spec start(Pynode.agent(), iodata(), keyword(), :events | :quiet | :start_run) ::
          {:ok, t()} | {:error, Error.t()}
  def start(agent, prompt, opts, mode) do
    opts = Keyword.validate!(opts, Pynode.run_option_keys())
    timeout = Keyword.get(opts, :timeout, 60_000)
    deadline = System.monotonic_time(:millisecond) + timeout

    with {:ok, dest} <- Pynode.Agent.resolve(agent, opts[:pynode]) do
      {node_opts, tool_server} = node_options(opts, mode)
      mon = Process.monitor(dest)

      case Pynode.Call.call(dest, {:start_run, prompt, node_opts}, timeout) do
        {:ok, ref} when is_reference(ref) ->
          run = %__MODULE__{
            ref: ref,
            agent: dest,
            monitor: mon,
            tool_server: tool_server,
            deadline: deadline,
            timeout: timeout,
            owner: self()
          }

          if mode == :start_run,
            do:
              {:ok, %{run | timer: Process.send_after(self(), {:pynode_timeout, ref}, timeout)}},
            else: {:ok, run}

        other ->
          Process.demonitor(mon, [:flush])
          ToolServer.stop(tool_server)
          {:error, start_error(other)}
      end
    end
  end

  defp start_error({:error, %Error{} = error}), do: error

  defp start_error(other),
    do: %Error{kind: :internal_error, message: "unexpected start_run reply: #{inspect(other)}"}

  defp node_options(opts, mode) do
    {tools, opts} = Keyword.pop(opts, :tools, [])
    {output, opts} = Keyword.pop(opts, :output)
    opts = Keyword.drop(opts, [:timeout, :on_event, :pynode])
    node_opts = opts |> Map.new() |> model_option()

    node_opts =
      case output do
        nil -> deprecated_output_schema(node_opts)
        :text -> Map.put(node_opts, :output_schema, :text)
        spec -> Map.put(node_opts, :output_schema, Pynode.Schema.to_json_schema(spec))
      end

    node_opts = if mode == :quiet, do: Map.put_new(node_opts, :events, false), else: node_opts

    case tools do
      [] ->
        {node_opts, nil}

      tools ->
        tools = Enum.map(tools, &Pynode.Tool.from!/1)
        node_opts = Map.put(node_opts, :tools, Enum.map(tools, &Pynode.Tool.to_run_spec/1))

        case Enum.filter(tools, &Pynode.Tool.served_here?/1) do
          [] ->
            {node_opts, nil}

          served ->
            if Map.has_key?(node_opts, :tool_handler) do
              raise ArgumentError, "give :tool_handler or Elixir function tools, not both"
            end

            server = ToolServer.start(served, self(), Map.get(node_opts, :deps, %{}))
            {Map.put(node_opts, :tool_handler, server), server}
        end
    end
  end

  defp model_option(%{model: model} = node_opts),
    do: %{node_opts | model: Pynode.Test.model_term(model)}

  defp model_option(node_opts), do: node_opts

  defp deprecated_output_schema(%{output_schema: _} = node_opts) do
    IO.warn(
      "the run option :output_schema is deprecated: use :output (a JSON Schema map, a keyword spec or :text)"
    )

    node_opts
  end

  defp deprecated_output_schema(node_opts), do: node_opts

  @doc false
  # Waits for the run's next message: an event, its end, or the deadline (which cancels it).
  @spec next(t()) :: {:event, event()} | {:done, Result.t()} | {:error, Error.t()}
  def next(%__MODULE__{ref: ref, monitor: mon} = run) do
    receive do
      {:pynode_event, ^ref, _event} = message -> handle_info(message, run)
      {:pynode_result, ^ref, _result} = message -> handle_info(message, run)
      {:DOWN, ^mon, :process, _, _reason} = message -> handle_info(message, run)
    after
      remaining(run) -> handle_info({:pynode_timeout, ref}, run)
    end
  end

  @doc false
  @spec await(t(), (event() -> term()) | nil) :: {:ok, Result.t()} | {:error, Error.t()}
  def await(run, on_event) do
    case next(run) do
      {:event, event} ->
        if on_event, do: on_event.(event)
        await(run, on_event)

      {:done, result} ->
        {:ok, result}

      {:error, error} ->
        {:error, error}
    end
  end

  @doc false
  # Cancels the run on the node and takes its remaining messages out of the mailbox.
  @spec abandon(t()) :: :ok
  def abandon(%__MODULE__{ref: ref} = run) do
    # A run that has ended (its monitor removed by finish/1, or fired) has nothing left to drain.
    if Process.demonitor(run.monitor, [:flush, :info]) do
      until = System.monotonic_time(:millisecond) + @drain_ms
      mon = Process.monitor(run.agent)
      _ = Pynode.Call.call(run.agent, {:cancel, ref}, @drain_ms)
      drain(ref, mon, until)
      Process.demonitor(mon, [:flush])
    end

    finish(run)
  end

  defp drain(ref, mon, until) do
    receive do
      {:pynode_event, ^ref, _} -> drain(ref, mon, until)
      {:pynode_result, ^ref, _} -> :ok
      {:DOWN, ^mon, :process, _, _} -> :ok
    after
      max(until - System.monotonic_time(:millisecond), 0) -> :ok
    end
  end

  defp finish(run) do
    Process.demonitor(run.monitor, [:flush])
    ToolServer.stop(run.tool_server)

    if run.timer do
      Process.cancel_timer(run.timer)
      ref = run.ref

      receive do
        {:pynode_timeout, ^ref} -> :ok
      after
        0 -> :ok
      end
    end

    flush_events(run.ref)
  end

  defp flush_events(ref) do
    receive do
      {:pynode_event, ^ref, _} -> flush_events(ref)
    after
      0 -> :ok
    end
  end

  # The agent or its node went away: a final result already in the mailbox wins.
  defp went_away(%__MODULE__{ref: ref, agent: {name, node}} = run, reason) do
    receive do
      {:pynode_result, ^ref, result} ->
        finish(run)
        outcome(result)
    after
      0 ->
        finish(run)
        {:error, down_error(name, node, reason)}
    end
  end

  defp down_error(_name, node, :noconnection),
    do: Error.nodedown(node, "went away during the run")

  defp down_error(name, node, :noproc),
    do: %Error{kind: :unknown_agent, message: "no agent #{inspect(name)} on #{node}"}

  defp down_error(name, node, reason),
    do: %Error{
      kind: :cancelled,
      message: "the agent #{inspect(name)} on #{node} exited during the run: #{inspect(reason)}"
    }

  defp outcome({:ok, result}) when is_map(result), do: {:done, Result.from_map(result)}
  defp outcome({:error, reason}), do: {:error, Error.from_reply(reason)}

  defp outcome(other),
    do:
      {:error, %Error{kind: :internal_error, message: "unexpected run result: #{inspect(other)}"}}

  defp remaining(run), do: max(run.deadline - System.monotonic_time(:millisecond), 0)

  defp timeout_error(%__MODULE__{agent: {name, node}, timeout: timeout}),
    do: %Error{
      kind: :timeout,
      message:
        "the run of #{inspect(name)} on #{node} did not end within #{timeout} ms; it was cancelled"
    }
end
