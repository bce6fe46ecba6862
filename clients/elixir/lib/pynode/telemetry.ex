defmodule Pynode.Telemetry do
  @moduledoc """
  The `:telemetry` events of the library, for metrics, logs and traces of your runs.

  The library does not depend on `:telemetry`: it emits these events when the application has
  it (any app that depends on Phoenix, Ecto, Finch or Oban does), and does nothing otherwise.
  Attach to them as to any library's:

      :telemetry.attach_many(
        "my-app-pynode",
        [[:pynode, :run, :stop], [:pynode, :run, :exception]],
        &MyApp.Metrics.handle_event/4,
        nil
      )

  The events follow the span conventions of `:telemetry.span/3`: `:start`, then exactly one of
  `:stop` and `:exception`, with the same `:telemetry_span_context` in their metadata. Times are
  in `:native` units (`System.convert_time_unit/3` turns them into what you need).

  ## Runs

  Every run of `Pynode.run/3`, `Pynode.stream/3` and `Pynode.start_run/3`, in the process that
  makes it.

    * `[:pynode, :run, :start]` - the run starts (before the node is asked).
      Measurements: `:system_time`, `:monotonic_time`.
      Metadata: `:agent` (the agent's name, an atom), `:node` (the Python node that runs it, when
      known before the run starts; `nil` for a `Pynode.Cluster`'s agent, whose member is picked as
      the run starts), `:model` (the run's `:model` option as a name: `"openai:gpt-4o"`, a
      provider map as `"openai:gpt-4o"`, `"function"` for a `{:function, fun}` or a script; `nil`
      when the run uses its agent's model), `:run_id` (`nil`: the node gives it when the run
      ends), `:telemetry_span_context`.

    * `[:pynode, :run, :stop]` - the run ended with `{:ok, %Pynode.Result{}}`.
      Measurements: `:duration`, `:monotonic_time`, and the run's usage as the node counted it:
      `:input_tokens`, `:output_tokens`, `:requests`, `:tool_calls`.
      Metadata: as `:start`, with `:node` the node that ran it, `:run_id` the result's, and
      `:result` the `Pynode.Result`.

    * `[:pynode, :run, :exception]` - the run ended with `{:error, %Pynode.Error{}}`: the node's
      error, a timeout, the node gone, the run cancelled by its caller (`Pynode.cancel/1`, a
      stream halted early: kind `:cancelled`), or a raise in the library while it started the
      run (then re-raised).
      Measurements: `:duration`, `:monotonic_time`.
      Metadata: as `:start` (with `:node` the node that had the run, when it had started on
      one), and `:kind` (`:error` for a `Pynode.Error`, else the kind of the raise: `:error`,
      `:exit` or `:throw`), `:reason` (the `Pynode.Error`, or what was raised), `:stacktrace`
      (`[]` for a `Pynode.Error`), `:error` (the `Pynode.Error`, or `nil` for a raise).

  For `Pynode.start_run/3`, `:stop` or `:exception` is emitted when `Pynode.Run.handle_info/2`
  sees the run end (or `Pynode.cancel/1` cancels it).

  ## Elixir tools

  Each call of a function tool (`Pynode.Tool` with a `:fun`) that the library serves for a run,
  in the process that serves the run's tools. Tools that the node calls as `{Module, :function}`
  run outside the library and have no event.

    * `[:pynode, :tool, :start]` - the model called the tool.
      Measurements: `:system_time`, `:monotonic_time`.
      Metadata: `:tool` (its name), `:call_id`, `:args` (the arguments, string keys), `:node`
      (the Python node of the run), `:run_ref` (the run's reference, `Pynode.Run`'s `:ref`),
      `:telemetry_span_context`.

    * `[:pynode, :tool, :stop]` - the tool answered, the model is told.
      Measurements: `:duration`, `:monotonic_time`.
      Metadata: as `:start`, and `:result`: `{:ok, value}`, `{:error, message}` or
      `{:retry, message}`, what goes back to the model.

    * `[:pynode, :tool, :exception]` - the tool raised, threw or exited, was killed, or did not
      answer within its `:timeout` (kind `:exit`, reason `:timeout`), or its run ended while it
      ran (kind `:exit`, reason `:shutdown`). The model is told it failed.
      Measurements: `:duration`, `:monotonic_time`.
      Metadata: as `:start`, and `:kind`, `:reason`, `:stacktrace`.

  ## Nodes

  Emitted by each `Pynode` child, when it sends its subscribers `{:pynode, :up | :down, node}`.

    * `[:pynode, :node, :up]` - the Python node is connected.
    * `[:pynode, :node, :down]` - the Python node went away (the child reconnects or restarts it).

    Measurements: `:system_time`. Metadata: `:node` (the Python node's name), `:pynode` (the
    `Pynode` child's `:name`).
  """

  alias Pynode.{Error, Result, Run}

  @typedoc "What a started span carries to its end (`nil` when `:telemetry` is not there)."
  @type span :: %{start: integer(), meta: map()} | nil

  @available_key {__MODULE__, :telemetry}

  ## Runs

  @doc false
  @spec run_start(Pynode.agent(), keyword()) :: span()
  def run_start(agent, opts) do
    if available?() do
      meta = %{
        agent: agent_name(agent),
        node: known_node(agent, opts),
        model: model_label(Keyword.get(opts, :model)),
        run_id: nil,
        telemetry_span_context: make_ref()
      }

      start(:run, meta)
    end
  end

  @doc false
  # What Pynode.Run.handle_info/2 classified: a run's end emits :stop or :exception; a run
  # started again elsewhere keeps its span. Returns `classified` (the new run with the span).
  @spec run_ended(term(), Run.t()) :: term()
  def run_ended({:done, %Result{} = result} = classified, %Run{span: span} = run)
      when span != nil do
    usage = result.usage || %{}

    measurements = %{
      input_tokens: Map.get(usage, :input_tokens, 0),
      output_tokens: Map.get(usage, :output_tokens, 0),
      requests: Map.get(usage, :requests, 0),
      tool_calls: Map.get(usage, :tool_calls, 0)
    }

    meta = %{run_meta(span, run) | run_id: result.run_id} |> Map.put(:result, result)
    stop(:run, span, measurements, meta)
    classified
  end

  def run_ended({:error, %Error{} = error} = classified, %Run{span: span} = run)
      when span != nil do
    run_error(span, run, error)
    classified
  end

  def run_ended({:retried, %Run{} = again, error}, %Run{span: span}),
    do: {:retried, %{again | span: span}, error}

  def run_ended(classified, _run), do: classified

  @doc false
  # The run could not start: `{:error, error}` from the start, or the start's raise.
  @spec run_not_started(span(), Error.t()) :: :ok
  def run_not_started(nil, _error), do: :ok
  def run_not_started(span, %Error{} = error), do: run_error(span, nil, error)

  @doc false
  @spec run_raised(span(), :error | :exit | :throw, term(), Exception.stacktrace()) :: :ok
  def run_raised(nil, _kind, _reason, _stacktrace), do: :ok

  def run_raised(span, kind, reason, stacktrace) do
    exception(:run, span, span.meta, kind, reason, stacktrace, %{error: nil})
  end

  @doc false
  # A run its caller gave up (Pynode.cancel/1, a stream halted early) before it ended.
  @spec run_cancelled(Run.t()) :: :ok
  def run_cancelled(%Run{span: nil}), do: :ok

  def run_cancelled(%Run{span: span} = run) do
    run_error(span, run, %Error{kind: :cancelled, message: "the caller cancelled the run"})
  end

  defp run_error(span, run, error) do
    meta = if run, do: run_meta(span, run), else: span.meta
    exception(:run, span, meta, :error, error, [], %{error: error})
  end

  defp run_meta(span, %Run{agent: {_name, node}}), do: %{span.meta | node: node}
  defp run_meta(span, _run), do: span.meta

  # The node of the agent, when it is known before the run starts (not a cluster's agent).
  defp known_node(agent, opts) do
    case Pynode.Agent.resolve(agent, opts[:pynode]) do
      {:ok, {_name, node}} -> node
      _other -> nil
    end
  end

  defp agent_name({name, _node}), do: name
  defp agent_name(name), do: name

  defp model_label(nil), do: nil
  defp model_label(name) when is_binary(name), do: name
  defp model_label({:function, _fun}), do: "function"
  defp model_label(%Pynode.Test.Script{}), do: "function"

  defp model_label(%{} = model) do
    provider = Map.get(model, :provider) || Map.get(model, "provider")
    name = Map.get(model, :name) || Map.get(model, "name")
    if provider && name, do: "#{provider}:#{name}", else: nil
  end

  defp model_label(_other), do: nil

  ## Tools

  @doc false
  @spec tool_start(map()) :: span()
  def tool_start(meta) do
    if available?(), do: start(:tool, Map.put(meta, :telemetry_span_context, make_ref()))
  end

  @doc false
  @spec tool_stop(span(), term()) :: :ok
  def tool_stop(nil, _reply), do: :ok
  def tool_stop(span, reply), do: stop(:tool, span, %{}, Map.put(span.meta, :result, reply))

  @doc false
  @spec tool_exception(span(), :error | :exit | :throw, term(), Exception.stacktrace()) :: :ok
  def tool_exception(nil, _kind, _reason, _stacktrace), do: :ok

  def tool_exception(span, kind, reason, stacktrace),
    do: exception(:tool, span, span.meta, kind, reason, stacktrace, %{})

  ## Nodes

  @doc false
  @spec node_event(:up | :down, node(), GenServer.name() | nil) :: :ok
  def node_event(event, node, pynode) when event in [:up, :down] do
    if available?() do
      execute([:pynode, :node, event], %{system_time: System.system_time()}, %{
        node: node,
        pynode: pynode
      })
    end

    :ok
  end

  ## Spans

  defp start(kind, meta) do
    now = System.monotonic_time()

    execute(
      [:pynode, kind, :start],
      %{system_time: System.system_time(), monotonic_time: now},
      meta
    )

    %{start: now, meta: meta}
  end

  defp stop(kind, span, measurements, meta) do
    now = System.monotonic_time()
    measurements = Map.merge(%{duration: now - span.start, monotonic_time: now}, measurements)
    execute([:pynode, kind, :stop], measurements, meta)
  end

  defp exception(kind, span, meta, error_kind, reason, stacktrace, extra) do
    now = System.monotonic_time()

    meta =
      meta
      |> Map.merge(%{kind: error_kind, reason: reason, stacktrace: stacktrace})
      |> Map.merge(extra)

    execute(
      [:pynode, kind, :exception],
      %{duration: now - span.start, monotonic_time: now},
      meta
    )
  end

  # apply/3: :telemetry is not a dependency, so the compiler cannot know it (a handler that raises
  # is :telemetry's business: it detaches it).
  defp execute(event, measurements, meta) do
    apply(:telemetry, :execute, [event, measurements, meta])
    :ok
  end

  # Whether the application has :telemetry, found out once per VM.
  defp available? do
    case :persistent_term.get(@available_key, nil) do
      nil ->
        found = Code.ensure_loaded?(:telemetry) and function_exported?(:telemetry, :execute, 3)
        :persistent_term.put(@available_key, found)
        found

      found ->
        found
    end
  end
end
