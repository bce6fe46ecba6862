defmodule Pynode.Tool do
  @moduledoc """
  A tool the model can call, written as an Elixir function.

      weather =
        Pynode.Tool.new(
          name: "weather",
          description: "Tomorrow's weather for a city",
          parameters: [city: [type: :string, required: true, doc: "A city name"]],
          fun: &MyApp.Weather.forecast/1
        )

      Pynode.run(:assistant, "Weather in Lisbon?", tools: [weather])

  ## Options

    * `:name` - the tool's name, as the model sees it (required)
    * `:description` - what the tool does, for the model
    * `:parameters` - a keyword spec or a JSON Schema map (see `Pynode.Schema`); default: no parameters
    * `:fun` - `fn args -> ... end` or `fn args, ctx -> ... end`; `args` is the validated argument map
      (string keys) and `ctx` is `%{deps: map, run_ref: ref, call_id: id, tool: name}`
    * `:handler` - `{Module, :function}` instead of `:fun`: the node calls `Module.function(args)` on
      the agent's home node, as `erpc` would, or `Module.function(args, ctx)` when the module
      exports it with arity 2; that `ctx` is the node's: `%{deps: map, run_id: id, agent: name,
      call_id: id, trace_context: list}` (docs/protocol.md section 3)
    * `:timeout` - milliseconds the function may take (default 30 s); past it, the model is told the
      tool failed
    * `:requires_approval` - `true`: each call waits for a decision of the run's approver before
      the tool runs (default `false`); see `Pynode.Approval` and the run options `:approver` and
      `:approvals` of `Pynode.run/3`

  ## What the function returns

    * `{:ok, value}` - `value` goes to the model
    * `{:error, message}` - the model is told the tool failed
    * `{:retry, message}` - the model is asked to call again with other arguments
    * any other value - the value goes to the model

  A raise, throw or exit is a tool failure the model is told about; the run goes on.

  ## Where tools run

  Tools given to `Pynode.run/3`, `Pynode.stream/3` or `Pynode.start_run/3` are served by this
  library in the calling application: a process of the run calls `:fun`, so closures are fine.
  Tools given to `Pynode.Agent` must be `{Module, :function}` handlers (an `&Module.function/1`
  or `/2` capture is turned into one; a closure is an `ArgumentError` when the child spec is built): the node calls them on the agent's home node, and only data
  crosses nodes.
  """

  @type args :: %{optional(String.t()) => term()}
  @type ctx :: %{deps: map(), run_ref: reference(), call_id: String.t(), tool: String.t()}
  @type reply :: {:ok, term()} | {:error, term()} | {:retry, term()} | term()

  @type t :: %__MODULE__{
          name: String.t(),
          description: String.t() | nil,
          parameters: map(),
          fun: (args() -> reply()) | (args(), ctx() -> reply()) | nil,
          handler: {module(), atom()} | nil,
          timeout: timeout(),
          requires_approval: boolean()
        }

  @enforce_keys [:name]
  defstruct [
    :name,
    :description,
    :fun,
    :handler,
    parameters: %{},
    timeout: 30_000,
    requires_approval: false
  ]

  @doc """
  A tool from its options (see the module doc). Raises `ArgumentError` on a bad option.
  """
  @spec new(keyword()) :: t()
  def new(opts) when is_list(opts) do
    opts =
      Keyword.validate!(opts, [
        :name,
        :description,
        :fun,
        :handler,
        parameters: [],
        timeout: 30_000,
        requires_approval: false
      ])

    name = to_string(opts[:name] || raise(ArgumentError, "a tool needs a :name"))

    case {opts[:fun], opts[:handler]} do
      {fun, nil} when is_function(fun, 1) or is_function(fun, 2) ->
        :ok

      {nil, {m, f}} when is_atom(m) and is_atom(f) ->
        :ok

      _ ->
        raise ArgumentError,
              "tool #{name}: give :fun (arity 1 or 2) or :handler {Module, :function}"
    end

    unless is_boolean(opts[:requires_approval]) do
      raise ArgumentError,
            "tool #{name}: :requires_approval must be a boolean, got: " <>
              inspect(opts[:requires_approval])
    end

    %__MODULE__{
      name: name,
      description: opts[:description],
      parameters: Pynode.Schema.to_json_schema(opts[:parameters]),
      fun: opts[:fun],
      handler: opts[:handler],
      timeout: opts[:timeout],
      requires_approval: opts[:requires_approval]
    }
  end

  @doc false
  # A tool given as a `Pynode.Tool` or as the keyword options of `new/1`.
  @spec from!(t() | keyword()) :: t()
  def from!(%__MODULE__{} = tool), do: tool
  def from!(opts) when is_list(opts), do: new(opts)
  def from!(other), do: raise(ArgumentError, "expected a Pynode.Tool, got: #{inspect(other)}")

  @doc false
  # The spec sent to the node for a tool served by the library: no handler, so the call goes to
  # the run's tool_handler. A `{M, F}` tool keeps its handler.
  @spec to_run_spec(t()) :: map()
  def to_run_spec(%__MODULE__{} = tool) do
    tool
    |> base_spec()
    |> maybe_put(:handler, tool.handler)
  end

  @doc false
  # The spec of an agent's tool: `{M, F}` only (the node calls it on the home node).
  @spec to_agent_spec(t()) :: map()
  def to_agent_spec(%__MODULE__{handler: {_, _} = handler} = tool),
    do: tool |> base_spec() |> Map.put(:handler, handler)

  def to_agent_spec(%__MODULE__{fun: fun} = tool) do
    case Function.info(fun) |> Keyword.take([:type, :module, :name, :arity]) |> Map.new() do
      %{type: :external, module: m, name: f, arity: arity} when arity in [1, 2] ->
        tool |> base_spec() |> Map.put(:handler, {m, f})

      _ ->
        raise ArgumentError,
              "tool #{inspect(tool.name)} of Pynode.Agent is #{inspect(fun)}: an agent's tool must " <>
                "be {Module, :function} or &Module.function/1 (or /2), which the node calls by " <>
                "name on the home node; give closures to Pynode.run/3 as run tools instead"
    end
  end

  @doc false
  @spec served_here?(t()) :: boolean()
  def served_here?(%__MODULE__{fun: fun}), do: fun != nil

  defp base_spec(tool) do
    %{name: tool.name, parameters: parameters(tool.parameters)}
    |> maybe_put(:description, tool.description)
    |> maybe_put(:requires_approval, if(tool.requires_approval, do: true))
  end

  defp parameters(schema) when map_size(schema) == 0,
    do: %{"type" => "object", "properties" => %{}}

  defp parameters(schema), do: schema

  defp maybe_put(map, _key, nil), do: map
  defp maybe_put(map, key, value), do: Map.put(map, key, value)
end
