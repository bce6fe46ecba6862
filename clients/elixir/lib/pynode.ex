defmodule Pynode do
  @moduledoc """
  pydantic-ai agents on a pynode Python node, run from Elixir.

  A `Pynode` child owns one Python node: it starts it (or finds it), connects to it, and brings it
  back when it goes. `Pynode.Agent` children make sure their agents exist on it. Runs are plain
  function calls that return `{:ok, %Pynode.Result{}}` or `{:error, %Pynode.Error{}}`, never an
  exit; tools are Elixir functions served inside your application.

      children = [
        {Pynode, name: MyApp.Py, node: :"py@127.0.0.1", start: [cmd: "pynode", args: ["--agents", "agents"]]},
        {Pynode.Agent, pynode: MyApp.Py, name: :assistant, spec: %{model: "openai:gpt-4o"}}
      ]

      Supervisor.start_link(children, strategy: :rest_for_one)

      {:ok, %Pynode.Result{output: text}} = Pynode.run(:assistant, "Summarise OTP in one line")

  ## Options

    * `:name` - the name of this child, used by `await_ready/2`, `subscribe/1` and `Pynode.Agent`
      (required)
    * `:node` - the Python node's name, such as `:"py@127.0.0.1"`. Default: derived from this
      node's name, short or long as it is: `:"shop_py@myhost"` for an app started as
      `--sname shop`, `:"shop_py@10.0.0.5"` for `--name shop@10.0.0.5`, and
      `:"pynode_py_<os pid>@127.0.0.1"` for an app that is not distributed yet. A name of the other
      mode (a long name from a `--sname` app, or the reverse) cannot be reached: `start_link/1`
      raises `ArgumentError` saying so
    * `:start` - start the node as an OS process: `[cmd: "pynode", args: [...], env: [{"K", "V"}],
      cd: dir, log_level: level]`. When it exits it is started again after a backoff; when this
      child stops, it gets SIGTERM, then SIGKILL after `:stop_timeout`. Without `:start`, the
      child connects to a node that runs already and reconnects with backoff when it goes away.
      The command line is `cmd`, then what the library asks, each unless `args` has the flag:
      `--name NODE` (or `--sname`); `--no-agents` (Python-defined agents come only from an
      `--agents DIR` in `args`, never from an implicit `./agents`, and a node without them says
      nothing about it); `--log-format json` and `--log-level` (unless `env` sets
      `PYNODE_LOG_FORMAT`, or `PYNODE_LOG_LEVEL` without `:log_level`); then `args`. The cookie
      is handed over in `$PYNODE_COOKIE`.

      `:log_level` is what the node logs: a `Logger` level (`:debug`, `:info`, `:warning`,
      `:error`, ...; `:notice` logs as `:info`, `:alert` and `:emergency` as `:critical`).
      Default: `Logger.level()` when the node starts. Each run's end is logged at `:debug`.

      The node's output goes to `Logger`: each line of its log at its own level, the text
      prefixed with `[NODE] `, with the metadata `:pynode_node` (the node, an atom),
      `:pynode_logger` (the Python logger, such as `"pynode.registry"`) and, on lines about an
      agent or a run, `:agent` (the agent's name) and `:run_id` (the `run_id` of the run's
      `Pynode.Result`), strings. A formatter shows them when asked to, as
      `config :logger, :console, metadata: [:pynode_logger, :agent, :run_id]` does. Any other
      line (a traceback, what Python code prints, a node started with other `--log-format` args)
      goes to `Logger` at `:info`, with `:pynode_node`.
    * `:cookie` - the cookie (an atom) for the connection to the Python node, and only that one:
      it is set with `:erlang.set_cookie(node, cookie)` for the Python node's name, so this
      node's own cookie (`Node.get_cookie/0`) and its other connections stay as they are. A node
      this child starts gets it in `$PYNODE_COOKIE`, never on its command line (where `ps` would
      show it), and it never reaches a log line. Default: this node's own cookie
    * `:client_name` - the name this node takes if it is not distributed yet (see below);
      default `:"pynode_client_<os pid>@<the Python node's host>"`
    * `:backoff_initial` - milliseconds before the first reconnect or restart (default 500)
    * `:backoff_max` - the most the backoff grows to, ×1.5 each time (default 30 000)
    * `:stop_timeout` - milliseconds a stop waits for the node after SIGTERM, before SIGKILL
      (default 5 000). SIGTERM makes the node drain (docs/protocol.md section 9): it takes no new
      run and lets those in flight end. The node this child starts is given `--drain-timeout` a
      second under `:stop_timeout` (half of it when that is under two seconds), unless `args`
      has one: the runs still going then are cancelled, and their callers get
      `{:error, %Pynode.Error{kind: :cancelled}}`, before the SIGKILL would cut them off. Give
      runs that take longer a longer `:stop_timeout` (the child spec's shutdown follows it)

  ## Distribution

  The Python node is a hidden node of an Erlang cluster, so the application's node must be
  distributed. If it was started with `--name`/`--sname` (`elixir --name app@127.0.0.1 --cookie
  SECRET ...`, or a release), it is used as it is. If not (`mix run`, `mix test`, `iex -S mix`),
  the first `Pynode` child starts distribution itself as `:client_name`. That needs an epmd on
  port 4369 or on the port in `$ERL_EPMD_PORT`; when none answers, the child starts one with
  `epmd -daemon`, as `erl -name` does (it stays up after the application stops). This node's own cookie is then
  `~/.erlang.cookie` (created if missing), and the Python node's is `:cookie` when given, else
  that one.

  ## Node events

  `subscribe/1` sends the subscriber `{:pynode, :up, node}` when the node is connected (at once if
  it is) and `{:pynode, :down, node}` when it goes away.

  ## Several Python nodes

  `Pynode.Cluster` runs several Python nodes as one: its agents exist on every node, and each
  run goes to one of them. `subscribe/1`, `await_ready/2` and `members/2` take a cluster too.

  ## Run options

  `run/3`, `stream/3` and `start_run/3` take the same options: see `run/3`.

  ## Errors

  Every error is a `Pynode.Error` with the node's kind (docs/protocol.md section 6), or `:nodedown`
  when the node is not connected or went away during the run, or `:timeout`.
  """

  alias Pynode.{Approval, Error, Result, Run}

  @typedoc "An agent: a name given to `Pynode.Agent`, or `{name, node}` for any agent on a node."
  @type agent :: atom() | {atom(), node()}

  @typedoc "The `:name` of a `Pynode` child (or, where a function says so, of a `Pynode.Cluster`)."
  @type pynode :: GenServer.server()

  @typedoc "A run option (see the module doc)."
  @type run_option ::
          {:timeout, timeout()}
          | {:tools, [Pynode.Tool.t() | keyword()]}
          | {:output, Pynode.Schema.spec() | map() | :text}
          | {:pynode, pynode()}
          | {:on_event, (Run.event() -> term())}
          | {:messages_as, :json | :terms}
          | {:message_history, String.t() | [map()]}
          | {:deps, map()}
          | {:instructions, String.t()}
          | {:model,
             String.t() | map() | {:function, (list(), map() -> term())} | Pynode.Test.Script.t()}
          | {:model_settings, map()}
          | {:usage_limits, map()}
          | {:output_schema, map() | :text}
          | {:tool_handler, pid() | {atom(), node()}}
          | {:stream_to, pid()}
          | {:events, boolean()}
          | {:pick, :random | :local | ([pid()] -> pid())}
          | {:retry, :safe | :always | :never}
          | {:trace, boolean()}
          | {:trace_context, [{String.t(), String.t()}] | map()}
          | {:approver, pid() | {atom(), node()} | :defer}
          | {:approvals,
             %{optional(String.t() | Approval.t()) => Approval.decision()}
             | [{String.t() | Approval.t(), Approval.decision()}]}

  @run_option_keys [
    :timeout,
    :pynode,
    :tools,
    :output,
    :on_event,
    :messages_as,
    :message_history,
    :deps,
    :instructions,
    :model,
    :model_settings,
    :usage_limits,
    :output_schema,
    :tool_handler,
    :stream_to,
    :events,
    :pick,
    :retry,
    :trace,
    :trace_context,
    :approver,
    :approvals
  ]

  @doc false
  @spec run_option_keys() :: [atom()]
  def run_option_keys, do: @run_option_keys

  @doc "A child spec for a `Pynode` (see the module doc for the options)."
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: Keyword.get(opts, :name, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      shutdown: Keyword.get(opts, :stop_timeout, 5_000) + 1_000
    }
  end

  @doc "Starts a `Pynode` (see the module doc for the options)."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    opts =
      Keyword.validate!(opts, [
        :name,
        :node,
        :start,
        :cookie,
        :client_name,
        backoff_initial: 500,
        backoff_max: 30_000,
        stop_timeout: 5_000
      ])

    opts = Keyword.put(opts, :node, Pynode.NodeName.resolve(opts[:node]))

    if start = opts[:start], do: Keyword.validate!(start, [:cmd, :args, :env, :cd, :log_level])
    Pynode.Connection.start_link(opts)
  end

  @doc """
  Waits until the node is connected: `:ok`, or `{:error, :timeout}` after `timeout` ms. Given a
  `Pynode.Cluster`, waits until every node of it is connected.

  `{:error, {:node_failed, message}}` when the node this child starts failed at start, the same
  way three times in a row (a name in use, a bad flag, a bad `--models` file): a restart cannot
  fix that, so the child stops restarting it, and `message` is the node's own words (also logged
  at `:error`).
  """
  @spec await_ready(pynode(), timeout()) ::
          :ok | {:error, :timeout} | {:error, {:node_failed, String.t()}}
  def await_ready(pynode, timeout \\ 30_000) do
    GenServer.call(pynode, :await_ready, timeout)
  catch
    :exit, {:timeout, _} -> {:error, :timeout}
  end

  @doc """
  Subscribes the calling process to `{:pynode, :up, node}` and `{:pynode, :down, node}`.
  If the node is connected, `{:pynode, :up, node}` is sent at once.

  Given a `Pynode.Cluster`, the subscriber gets those of every node of the cluster, and
  `{:pynode, :members, agent, pids}` whenever the processes of `agent` on the cluster's nodes
  change (`pids` are all of them now; at once for each agent that has members). See
  `Pynode.Cluster`.
  """
  @spec subscribe(pynode()) :: :ok
  def subscribe(pynode), do: GenServer.call(pynode, {:subscribe, self()})

  @doc "Undoes `subscribe/1`."
  @spec unsubscribe(pynode()) :: :ok
  def unsubscribe(pynode), do: GenServer.call(pynode, {:unsubscribe, self()})

  @doc """
  The OS pid of the Python node this child started, or `nil` when it is not running.

  This and the other functions of one node (`node_name/1`, `info/2`, `list_agents/2`,
  `connected?/1`, `drain/2`) raise `ArgumentError` for a `Pynode.Cluster`: give them one of its
  nodes' children (`Pynode.Cluster.pynodes/1`).
  """
  @spec os_pid(pynode()) :: non_neg_integer() | nil
  def os_pid(pynode), do: pynode |> one_node!() |> GenServer.call(:os_pid)

  @doc "The Python node's name."
  @spec node_name(pynode()) :: node()
  def node_name(pynode), do: pynode |> one_node!() |> GenServer.call(:info) |> elem(0)

  defp one_node!(pynode) do
    if Pynode.Cluster.cluster?(pynode) do
      raise ArgumentError,
            "#{inspect(pynode)} is a Pynode.Cluster, not one node: give one of its nodes' " <>
              "Pynode children (Pynode.Cluster.pynodes/1)"
    end

    pynode
  end

  @doc """
  The processes of `agent` on the nodes of the `Pynode.Cluster` `cluster`: one pid for each node
  that has it now, from the cluster's `:pg` scope (`[]` when none has). Raises `ArgumentError`
  when `cluster` is not a running `Pynode.Cluster`.
  """
  @spec members(Pynode.Cluster.t(), atom()) :: [pid()]
  def members(cluster, agent), do: Pynode.Cluster.members(cluster, agent)

  @doc """
  Drains the node (docs/protocol.md section 9): it leaves every `:pg` group at once, answers new
  runs `{:error, %Pynode.Error{kind: :draining}}`, lets the runs in flight end (at most its
  `--drain-timeout`), then exits. A node this child started is then started again (after
  `:backoff_initial`), which makes a restart that fails no run when another node serves the same
  agents (see `Pynode.Cluster.rolling_restart/2`); a stop of this child while the node drains
  waits for it (at most `:stop_timeout`) without cancelling its runs.

  Returns `:ok`, or `{:error, %Pynode.Error{}}` (`:nodedown` when the node is not connected).
  """
  @spec drain(pynode(), timeout()) :: :ok | {:error, Error.t()}
  def drain(pynode, timeout \\ 5_000), do: drain(pynode, :restart, timeout)

  @doc false
  # Drains the node of a child that is about to stop (a cluster that stops drains its nodes at
  # once): the node is not started again when it has exited.
  @spec drain(pynode(), :restart | :stop, timeout()) :: :ok | {:error, Error.t()}
  def drain(pynode, then, timeout) do
    with {:ok, node} <- pynode |> one_node!() |> GenServer.call({:draining, then}) do
      case Pynode.Call.call({:pynode, node}, :drain, timeout) do
        :ok ->
          :ok

        {:ok, _} ->
          :ok

        {:error, error} ->
          GenServer.cast(pynode, :not_draining)
          {:error, error}
      end
    end
  end

  @doc """
  The node's registry `info` (docs/protocol.md section 3): `{:ok, %{node: ..., agents: n, runs: n,
  version: ..., pydantic_ai: ..., draining: boolean}}`, or `{:error, %Pynode.Error{}}`
  (`:nodedown` when it is away). The map also has what the node did since it started:
  `agent_runs` (runs in flight by agent), `runs_ended` (`%{ok: n, error: %{kind => n}}`), `usage`
  (the runs' `requests`, `input_tokens`, `output_tokens`, `tool_calls` and `cost` in USD, `nil`
  when no model was priced) and `run_duration_ms` (`runs`, `p50`, `p99` over the last minute).
  """
  @spec info(pynode(), timeout()) :: {:ok, map()} | {:error, Error.t()}
  def info(pynode, timeout \\ 5_000),
    do: Pynode.Call.call({:pynode, node_name(pynode)}, :info, timeout)

  @doc """
  The agents on the node (docs/protocol.md section 3): `{:ok, [%{name: atom, model: ..., origin:
  :beam | :python, ...}]}`, or `{:error, %Pynode.Error{}}`. A model is shown by provider, name and
  base URL, never its API key.
  """
  @spec list_agents(pynode(), timeout()) :: {:ok, [map()]} | {:error, Error.t()}
  def list_agents(pynode, timeout \\ 5_000),
    do: Pynode.Call.call({:pynode, node_name(pynode)}, :list_agents, timeout)

  @doc "Whether the node is connected now."
  @spec connected?(pynode()) :: boolean()
  def connected?(pynode), do: pynode |> one_node!() |> GenServer.call(:info) |> elem(1) == :up

  @doc """
  Runs `agent` on `prompt` and waits for its result (at most `:timeout`, default 60 s).

  It returns only after the run's Elixir tool processes have exited: when a run times out or
  fails, no tool of it is still running.

  ## Options

  These are also the options of `stream/3` and `start_run/3`; the node's own run options are in
  docs/protocol.md section 4.

    * `:timeout` - milliseconds for the whole run (default 60 000); when it passes, the run is
      cancelled on the node and the result is `{:error, %Pynode.Error{kind: :timeout}}`
    * `:tools` - `Pynode.Tool`s for this run only (or their keyword options); functions are called
      in this application, `{Module, :function}` handlers on this node by the node
    * `:output` - structured output: a keyword spec or a JSON Schema map (see `Pynode.Schema`);
      the result's `output` is then a map. `:text` turns the agent's output off for this run
    * `:model` - this run's model instead of the agent's: a name (`"openai:gpt-4o"`, a name of the
      node's `--models` file), a provider map (`%{provider: :openai, name: "gpt-4o", base_url: ...}`),
      `{:function, fun}` (`fun.(messages, info)` in this node answers each model request), or a
      `Pynode.Test.script/1`
    * `:model_settings` - a map for this run's model requests (`temperature`, `max_tokens`, ...)
    * `:usage_limits` - a map (`request_limit`, `tool_calls_limit`, `total_tokens_limit`, ...)
    * `:instructions` - extra instructions for this run (a string)
    * `:deps` - a map handed to the agent: Python agents get it as their deps, `{Module, :function}`
      instructions get it as their argument, `{Module, :function}/2` tools in their context
    * `:message_history` - the `messages` of an earlier result (either form): the run continues that
      conversation (`Pynode.Messages` reads and trims it)
    * `:messages_as` - `:json` (default) or `:terms`: `messages` and `new_messages` as lists of maps
      (with string keys) that an application can store and pass back
    * `:pynode` - the `Pynode` child whose `Pynode.Agent` of this name to run, when more than one
      hosts an agent of that name (agent names are scoped to their `Pynode`). A
      `Pynode.Cluster` runs the agent of that name on one of its nodes, whether a
      `Pynode.Agent` made it or the nodes define it in Python
    * `:pick` - for an agent of a `Pynode.Cluster`: which member takes the run, `:random`
      (default), `:local` (one on the same host as this node, when there is one) or a function
      given the members' pids that returns one of them (see `Pynode.Cluster`)
    * `:retry` - for an agent of a `Pynode.Cluster`: `:safe` (default) sends a run that a member
      did not take (gone, not connected, draining, overloaded) to another member at once, each
      member at most once; `:always` also starts a run again on another member when the node
      that had taken it went away, so its tools may run twice and a stream's events start over
      after a `{:retry, %Pynode.Error{}}` event; `:never` returns the first member's answer
    * `:on_event` - `run/3` only: a function called with each stream event in the calling process
    * `:tool_handler` - a pid or `{name, node}` that gets the calls of tools without a handler (as
      `{:pynode_tool_call, ref, call}` messages); not together with function tools
    * `:stream_to` - a pid that gets the run's stream events (`{:pynode_event, ref, event}`)
    * `:events` - `start_run/3` only: `false` sends only the final result, no events
    * `:trace` - `true` hands the calling process's OpenTelemetry context to the node, which makes
      the run's spans there (`invoke_agent`, `chat`, `execute_tool`) children of the caller's
      span: it is `:otel_propagator_text_map.inject([])`, sent as `:trace_context`. That needs the
      `opentelemetry_api` package in the application; without it (no `:otel_propagator_text_map`
      module) `trace: true` does nothing. Default: `config :pynode, trace: true` turns it on for
      every run (`false` when not set)
    * `:trace_context` - the trace context to hand to the node, as a W3C text map
      (`[{"traceparent", "00-..."}, {"tracestate", ...}]` or a map); given, it is sent as it is,
      whatever `:trace` says
    * `:approver` - where the calls of tools with `requires_approval: true` wait for a decision
      (see `Pynode.Approval`): a pid or `{name, node}`, which gets `{:pynode_approval, ref, map}`
      messages (`Pynode.Approval.from_message/1` reads them), or `:defer`: the run ends at once
      with those calls in its result's `:deferred`, to decide with `resume/4`. Default: `:defer`
      for `run/3` (its caller waits, and cannot decide); the calling process for `stream/3`
      (which yields `{:approval_required, %Pynode.Approval{}}`) and `start_run/3`
      (`Pynode.Run.handle_info/2` returns it). A call waits at most the run's `:timeout`
    * `:approvals` - the decisions on the deferred calls of an earlier result, as a map of call
      id (or `Pynode.Approval`) => decision, with that result's `messages` as
      `:message_history` and the prompt `""`: what `resume/4` sends
    * `:output_schema` - deprecated: use `:output`

  When the application has `:telemetry`, each run emits `[:pynode, :run, :start]`, then
  `[:pynode, :run, :stop]` or `[:pynode, :run, :exception]`: see `Pynode.Telemetry`.

  ## Examples

      {:ok, %Pynode.Result{output: output}} = Pynode.run(:assistant, "Weather in Lisbon?",
        tools: [Pynode.Tool.new(name: "weather", parameters: [city: :string], fun: &MyApp.weather/1)])

      {:error, %Pynode.Error{kind: :nodedown}} = Pynode.run(:assistant, "Hi")   # node away
  """
  @spec run(agent(), iodata(), [run_option()]) :: {:ok, Result.t()} | {:error, Error.t()}
  def run(agent, prompt, opts \\ []) do
    on_event = Keyword.get(opts, :on_event)
    mode = if on_event, do: :events, else: :quiet

    with {:ok, run} <- Run.start(agent, prompt, opts, mode) do
      Run.await(run, on_event)
    end
  end

  @doc "Like `run/3`, but returns the result or raises the `Pynode.Error`."
  @spec run!(agent(), iodata(), [run_option()]) :: Result.t()
  def run!(agent, prompt, opts \\ []) do
    case run(agent, prompt, opts) do
      {:ok, result} -> result
      {:error, error} -> raise error
    end
  end

  @doc """
  A lazy `Stream` of the run's events, ending with `{:done, %Pynode.Result{}}` or
  `{:error, %Pynode.Error{}}`.

  The run starts when the stream is enumerated, in the enumerating process (each enumeration is a
  run of its own). Halting early (`Enum.take/2`, a raise) cancels the run on the node.

  Events: `{:text_delta, text}`, `{:output_delta, map}`, `{:tool_call, name, args, id}`,
  `{:tool_result, name, content, id}`, `{:tool_error, name, message, id}`; and, for a cluster's
  agent run with `retry: :always`, `{:retry, %Pynode.Error{}}` when the node running it went
  away and the run started again on another member (the events after it are the new run's).

  Tools with `requires_approval: true` add `{:approval_required, name, args, call_id}` when a
  call of one starts to wait, `{:approval_required, %Pynode.Approval{}}` right after it when the
  enumerating process is the approver (the default: decide it with `approve/2`, in the
  enumeration's function or from another process; the run waits meanwhile, at most its
  `:timeout`), and `{:approval, call_id, decision}` once it is decided (a `:deny` shows the
  message the model got: `{:deny, message}`). With `approver: :defer` the stream ends with
  `{:done, %Pynode.Result{deferred: calls}}` instead.

  ## Examples

      Pynode.stream(:assistant, "Tell me a story")
      |> Enum.each(fn
        {:text_delta, text} -> IO.write(text)
        {:approval_required, %Pynode.Approval{} = call} -> Pynode.approve(call, :approve)
        {:done, _result} -> IO.puts("")
        _other -> :ok
      end)
  """
  @spec stream(agent(), iodata(), [run_option()]) :: Enumerable.t()
  def stream(agent, prompt, opts \\ []) do
    Stream.resource(
      fn -> Run.start(agent, prompt, opts, :stream) end,
      fn
        {:ok, run} ->
          case Run.next(run) do
            {:event, event} -> {[event], {:ok, run}}
            {:approval_required, call} -> {[{:approval_required, call}], {:ok, run}}
            {:retried, new_run, error} -> {[{:retry, error}], {:ok, new_run}}
            {:done, result} -> {[{:done, result}], :ended}
            {:error, error} -> {[{:error, error}], :ended}
          end

        {:error, error} ->
          {[{:error, error}], :ended}

        :ended ->
          {:halt, :ended}
      end,
      fn
        {:ok, run} -> Run.abandon(run)
        _ended -> :ok
      end
    )
  end

  @doc """
  Starts a run and returns at once; its messages arrive in the calling process. Read them with
  `Pynode.Run.handle_info/2` (see `Pynode.Run`). Events are sent unless `events: false`.
  """
  @spec start_run(agent(), iodata(), [run_option()]) :: {:ok, Run.t()} | {:error, Error.t()}
  def start_run(agent, prompt, opts \\ []), do: Run.start(agent, prompt, opts, :start_run)

  @doc "Like `start_run/3`, but returns the run or raises the `Pynode.Error`."
  @spec start_run!(agent(), iodata(), [run_option()]) :: Run.t()
  def start_run!(agent, prompt, opts \\ []) do
    case start_run(agent, prompt, opts) do
      {:ok, run} -> run
      {:error, error} -> raise error
    end
  end

  @doc """
  Cancels a run started with `start_run/3` and takes its remaining messages out of the mailbox.
  """
  @spec cancel(Run.t()) :: :ok
  def cancel(%Run{} = run), do: Run.abandon(run)

  @doc """
  Decides a tool call that waits for approval (see `Pynode.Approval` for the decisions):
  `:approve`, `{:approve, new_args}`, `:deny` or `{:deny, message}`.

  `approval` is what `Pynode.Run.handle_info/2` or `stream/3` gave (`{:approval_required,
  approval}`), or `Pynode.Approval.from_message/1` read. Any process may decide: the decision
  goes to the run's process on the node (`reply_to`), and the run goes on.

  Returns `:ok`, or `{:error, %Pynode.Error{kind: :bad_request}}` when the call waits no more
  (decided already, its run ended or timed out), or `:nodedown`. A decision that is none of the
  four raises `ArgumentError` and sends nothing, so the call still waits. A call of a
  `Pynode.Result`'s `:deferred` waits on no node: decide it with `resume/4` (giving it here raises
  `ArgumentError`).
  """
  @spec approve(Approval.t(), Approval.decision()) :: :ok | {:error, Error.t()}
  def approve(%Approval{reply_to: nil, call_id: id}, _decision) do
    raise ArgumentError,
          "the call #{id} is a deferred call of a Pynode.Result: nothing waits for it on a node; " <>
            "decide it with Pynode.resume/4"
  end

  def approve(%Approval{reply_to: reply_to, call_id: id}, decision),
    do: decide(reply_to, id, decision)

  @doc """
  Decides the call `call_id` of `run`, as `approve/2` does: for a process that has the run (a
  `Pynode.Run` from `start_run/3`) and a call id from its events
  (`{:approval_required, name, args, call_id}`), but not the `Pynode.Approval`.

  `run` may also be the `reply_to` pid of the call, or the agent's `{name, node}` (the agent hands
  the decision to its run that waits for `call_id`).
  """
  @spec approve(Run.t() | pid() | {atom(), node()}, String.t(), Approval.decision()) ::
          :ok | {:error, Error.t()}
  def approve(%Run{dest: dest}, call_id, decision) when is_binary(call_id),
    do: decide(dest, call_id, decision)

  def approve(dest, call_id, decision)
      when (is_pid(dest) or (is_tuple(dest) and tuple_size(dest) == 2)) and is_binary(call_id),
      do: decide(dest, call_id, decision)

  @approve_timeout 5_000

  defp decide(dest, call_id, decision) do
    decision = Approval.check_decision!(decision)

    case Pynode.Call.call(dest, {:approval, call_id, decision}, @approve_timeout) do
      :ok ->
        :ok

      {:ok, _} ->
        :ok

      # The call's `reply_to`, gone: its run has ended.
      {:error, %Error{kind: :internal_error, message: message} = error} when is_pid(dest) ->
        if String.ends_with?(message, "exited: :noproc"),
          do: {:error, ended(call_id)},
          else: {:error, error}

      {:error, error} ->
        {:error, error}
    end
  end

  defp ended(call_id),
    do: %Error{
      kind: :bad_request,
      message: "no tool call #{call_id} is waiting for approval: its run has ended"
    }

  @doc """
  Resumes a run that ended with calls waiting for approval (`result.deferred`, from a run with
  `approver: :defer`, the default of `run/3`): those calls run or are denied as `decisions` say,
  and the model is asked again. Returns what `run/3` does.

  `decisions` is a map (or a list of pairs) of call id, or `Pynode.Approval`, to decision, or a
  function given each deferred `Pynode.Approval` that returns its decision. Every deferred call
  needs one: a call left out raises `ArgumentError`, as a decision for a call that is not in
  `result.deferred` does (docs/protocol.md section 5 has the decisions).

  `opts` are those of `run/3`, given again as the first run had them (`tools:`, `model:`,
  `deps:`, ...: nothing is kept on the node between the two runs, and any node that serves the
  agent may resume it); `message_history:` is `result.messages` and `messages_as:` follows the
  form of those (`:terms` for a list). The resumed run's own calls that wait for approval defer
  again, in its result's `:deferred`.

      {:ok, %Pynode.Result{deferred: [%Pynode.Approval{name: "refund"} = call]} = paused} =
        Pynode.run(:support, "Refund order 42", tools: [refund])

      {:ok, %Pynode.Result{output: text}} =
        Pynode.resume(:support, paused, %{call.call_id => :approve}, tools: [refund])
  """
  @spec resume(
          agent(),
          Result.t(),
          %{optional(String.t() | Approval.t()) => Approval.decision()}
          | [{String.t() | Approval.t(), Approval.decision()}]
          | (Approval.t() -> Approval.decision()),
          [run_option()]
        ) :: {:ok, Result.t()} | {:error, Error.t()}
  def resume(agent, %Result{} = result, decisions, opts \\ []) do
    approvals = resume_approvals(result, decisions)

    opts = Keyword.merge(opts, message_history: result.messages, approvals: approvals)

    opts =
      if is_list(result.messages), do: Keyword.put_new(opts, :messages_as, :terms), else: opts

    run(agent, "", opts)
  end

  defp resume_approvals(%Result{deferred: []}, _decisions),
    do:
      raise(
        ArgumentError,
        "the result has no deferred calls: only a run that ended with calls waiting for " <>
          "approval (result.deferred) can be resumed"
      )

  defp resume_approvals(%Result{deferred: deferred}, decide) when is_function(decide, 1),
    do: Map.new(deferred, &{&1.call_id, Approval.check_decision!(decide.(&1))})

  defp resume_approvals(%Result{deferred: deferred}, decisions) do
    approvals = Approval.approvals!(decisions)
    ids = Enum.map(deferred, & &1.call_id)

    case {Map.keys(approvals) -- ids, ids -- Map.keys(approvals)} do
      {[], []} ->
        approvals

      {[], missing} ->
        raise ArgumentError,
              "resume: no decision for the deferred call(s) #{Enum.join(missing, ", ")}: " <>
                "every call in result.deferred needs one"

      {unknown, _} ->
        raise ArgumentError,
              "resume: #{Enum.join(unknown, ", ")} is not a deferred call of the result " <>
                "(those are: #{Enum.join(ids, ", ")})"
    end
  end
end
