defmodule Pynode.Connection do
  @moduledoc false
  # One Python node: started as an OS process through a Port (with `start:`) or found already
  # running; connected with Node.connect/1, watched with Node.monitor/2, reconnected or restarted
  # with backoff. Subscribers get {:pynode, :up | :down, node}.

  use GenServer
  require Logger

  @connect_poll 200
  @epmd_wait 5_000
  @epmd_poll 50
  # A node that exits before it was ever connected, this soon after its start, failed at start;
  # the same failure this many times in a row is one a restart cannot fix (a name in use, a bad
  # flag or --models file): the node is then left stopped and await_ready says why.
  @quick_exit_ms 15_000
  @give_up_after 3
  @tail_lines 20
  # A longer output line (the port delivers it in pieces of {:line, 8192}) is logged in pieces.
  @max_line 1_048_576

  @type state :: %{
          name: GenServer.name() | nil,
          node: node(),
          start: keyword() | nil,
          cookie: atom() | nil,
          port: port() | nil,
          os_pid: non_neg_integer() | nil,
          status: :up | :down,
          subscribers: %{pid() => reference()},
          waiters: [GenServer.from()],
          backoff_initial: pos_integer(),
          backoff_max: pos_integer(),
          backoff: pos_integer(),
          stop_timeout: pos_integer(),
          connect_timer: reference() | nil,
          epmd: %{name: node(), mode: :longnames | :shortnames, deadline: integer()} | nil,
          tail: [{Logger.level(), String.t()}],
          partial: iodata(),
          started_at: integer() | nil,
          failures: {term(), pos_integer()} | nil,
          failed: String.t() | nil,
          draining: false | :restart | :stop
        }

  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    {gen_opts, opts} = Keyword.split(opts, [:name])
    GenServer.start_link(__MODULE__, Keyword.merge(opts, gen_opts), gen_opts)
  end

  # init/1 only tries to start distribution (a few ms): when no epmd answers, it starts one and
  # waits for it with timer messages, serving calls meanwhile, as it does while connecting.
  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    node = Keyword.fetch!(opts, :node)
    initial = opts[:backoff_initial]

    state = %{
      name: opts[:name],
      node: node,
      start: start_opts(opts[:start]),
      cookie: opts[:cookie],
      port: nil,
      os_pid: nil,
      status: :down,
      subscribers: %{},
      waiters: [],
      backoff_initial: initial,
      backoff_max: opts[:backoff_max],
      backoff: initial,
      stop_timeout: opts[:stop_timeout],
      connect_timer: nil,
      epmd: nil,
      tail: [],
      partial: [],
      started_at: nil,
      failures: nil,
      failed: nil,
      draining: false
    }

    case distribute(node, opts[:client_name]) do
      :ok -> {:ok, state, {:continue, :distributed}}
      {:await_epmd, epmd} -> {:ok, %{state | epmd: epmd}, {:continue, :await_epmd}}
      {:error, reason} -> {:stop, {:distribution_not_started, reason}}
    end
  end

  @impl true
  def handle_continue(:distributed, state) do
    if state.cookie, do: :erlang.set_cookie(state.node, state.cookie)
    state = %{state | cookie: state.cookie || Node.get_cookie(), epmd: nil}

    if state.start,
      do: {:noreply, spawn_node(state)},
      else: {:noreply, schedule_connect(state, 0)}
  end

  def handle_continue(:await_epmd, state), do: await_epmd(state)

  @impl true
  def handle_call(:await_ready, from, state) do
    cond do
      state.status == :up -> {:reply, :ok, state}
      state.failed != nil -> {:reply, {:error, {:node_failed, state.failed}}, state}
      true -> {:noreply, %{state | waiters: [from | state.waiters]}}
    end
  end

  def handle_call({:subscribe, pid}, _from, state) do
    subscribers = Map.put_new_lazy(state.subscribers, pid, fn -> Process.monitor(pid) end)
    if state.status == :up, do: send(pid, {:pynode, :up, state.node})
    {:reply, :ok, %{state | subscribers: subscribers}}
  end

  def handle_call({:unsubscribe, pid}, _from, state) do
    {mon, subscribers} = Map.pop(state.subscribers, pid)
    if mon, do: Process.demonitor(mon, [:flush])
    {:reply, :ok, %{state | subscribers: subscribers}}
  end

  def handle_call(:os_pid, _from, state), do: {:reply, state.os_pid, state}

  # Pynode.drain/2 is about to ask the node to drain: its exit is then expected, and a stop of
  # this child waits for it without a SIGTERM (a second one would cancel the runs at once).
  # `then` is :restart (start it again when it has exited), or :stop when this child is about to
  # stop too (its cluster stops): the node is then started again only if this child is still
  # there after its :stop_timeout.
  def handle_call({:draining, then}, _from, %{status: :up} = state),
    do: {:reply, {:ok, state.node}, %{state | draining: then}}

  def handle_call({:draining, _then}, _from, state),
    do: {:reply, {:error, Pynode.Error.nodedown(state.node, "is not connected")}, state}

  def handle_call(:info, _from, state), do: {:reply, {state.node, state.status}, state}

  @impl true
  def handle_cast(:not_draining, state), do: {:noreply, %{state | draining: false}}

  @impl true
  def handle_info(:connect, %{status: :up} = state), do: {:noreply, %{state | connect_timer: nil}}

  def handle_info(:connect, state) do
    state = %{state | connect_timer: nil}

    cond do
      Node.connect(state.node) == true ->
        {:noreply, up(state)}

      state.start == nil ->
        {:noreply, state |> schedule_connect(state.backoff) |> grow()}

      state.port != nil ->
        # The node we started is still booting (or lost its connection): ask again shortly.
        {:noreply, schedule_connect(state, @connect_poll)}

      true ->
        {:noreply, state}
    end
  end

  def handle_info(:await_epmd, %{epmd: %{}} = state), do: await_epmd(state)

  def handle_info(:restart, state) do
    if state.port == nil, do: {:noreply, spawn_node(state)}, else: {:noreply, state}
  end

  def handle_info({:nodedown, node}, %{node: node} = state) do
    Logger.warning("pynode: lost the connection to #{node}")
    state = down(state)

    cond do
      state.start == nil -> {:noreply, state |> schedule_connect(state.backoff) |> grow()}
      state.port != nil -> {:noreply, schedule_connect(state, @connect_poll)}
      true -> {:noreply, state}
    end
  end

  # A line longer than the port's line length comes as {:noeol, piece}s, then {:eol, last piece}.
  def handle_info({port, {:data, {:eol, piece}}}, %{port: port} = state) do
    line = IO.iodata_to_binary([state.partial | piece])
    {:noreply, output_line(%{state | partial: []}, line)}
  end

  def handle_info({port, {:data, {:noeol, piece}}}, %{port: port} = state) do
    partial = [state.partial | piece]

    if IO.iodata_length(partial) >= @max_line,
      do: {:noreply, output_line(%{state | partial: []}, IO.iodata_to_binary(partial))},
      else: {:noreply, %{state | partial: partial}}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    state = flush_partial(state)
    exited = %{state | port: nil, os_pid: nil} |> down()

    cond do
      quick_exit?(state) ->
        failed_at_start(exited, status, reason_line(state.tail))

      state.draining != false and status == 0 ->
        delay =
          if state.draining == :stop,
            do: state.stop_timeout + 1_000,
            else: state.backoff_initial

        Logger.info(
          "pynode: the Python node #{state.node} (OS pid #{state.os_pid}) drained and stopped" <>
            if(state.draining == :stop, do: "", else: "; starting it again in #{delay} ms")
        )

        Process.send_after(self(), :restart, delay)
        {:noreply, %{exited | failures: nil, draining: false}}

      true ->
        Logger.warning(
          "pynode: the Python node #{state.node} (OS pid #{state.os_pid}) exited with status " <>
            "#{status}; restarting it in #{state.backoff} ms"
        )

        Process.send_after(self(), :restart, state.backoff)
        {:noreply, %{exited | failures: nil, draining: false} |> grow()}
    end
  end

  def handle_info({:EXIT, port, _reason}, state) when is_port(port), do: {:noreply, state}

  def handle_info({:DOWN, mon, :process, pid, _reason}, state) do
    case state.subscribers do
      %{^pid => ^mon} -> {:noreply, %{state | subscribers: Map.delete(state.subscribers, pid)}}
      _ -> {:noreply, state}
    end
  end

  def handle_info({:EXIT, _pid, reason}, state), do: {:stop, reason, state}
  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    if state.status == :up, do: Node.monitor(state.node, false)
    stop_node(state)
  end

  ## Connection state

  defp up(state) do
    Node.monitor(state.node, true)
    Logger.info("pynode: connected to #{state.node}")
    for from <- state.waiters, do: GenServer.reply(from, :ok)
    notify(state, :up)

    %{
      state
      | status: :up,
        waiters: [],
        backoff: state.backoff_initial,
        started_at: nil,
        failures: nil
    }
  end

  # `started_at` is the start of a node that has not been connected yet (nil once it was).
  defp quick_exit?(%{started_at: nil}), do: false

  defp quick_exit?(state),
    do: System.monotonic_time(:millisecond) - state.started_at < @quick_exit_ms

  # The node's own words: its last line that says what went wrong (a record logged at :error or
  # above, argparse's `error:`, the node's `pynode: ...` lines), else its last line.
  defp reason_line(tail) do
    case Enum.find(tail, &failure_line?/1) || List.first(tail) do
      {_level, text} -> text
      nil -> "it printed nothing"
    end
  end

  defp failure_line?({level, text}),
    do: level in [:error, :critical] or text =~ ~r/error|pynode: /i

  defp failed_at_start(state, status, reason) do
    count =
      case state.failures do
        {{^status, ^reason}, n} -> n + 1
        _ -> 1
      end

    message = "the Python node #{state.node} exited with status #{status} at start: #{reason}"

    if count >= @give_up_after do
      Logger.error(
        "pynode: #{message} (#{count} times in a row); not restarting it: a restart cannot fix this"
      )

      for from <- state.waiters, do: GenServer.reply(from, {:error, {:node_failed, reason}})
      {:noreply, %{state | failures: {{status, reason}, count}, failed: reason, waiters: []}}
    else
      Logger.error("pynode: #{message}; restarting it in #{state.backoff} ms")
      Process.send_after(self(), :restart, state.backoff)
      {:noreply, %{state | failures: {{status, reason}, count}} |> grow()}
    end
  end

  defp down(%{status: :down} = state), do: state

  defp down(state) do
    notify(state, :down)
    # A node this child did not start comes back, if it does, as a new node that is not draining.
    %{state | status: :down, draining: if(state.port != nil, do: state.draining, else: false)}
  end

  defp notify(state, event) do
    for {pid, _} <- state.subscribers, do: send(pid, {:pynode, event, state.node})
    Pynode.Telemetry.node_event(event, state.node, state.name)
  end

  defp schedule_connect(%{connect_timer: nil} = state, delay),
    do: %{state | connect_timer: Process.send_after(self(), :connect, delay)}

  defp schedule_connect(state, _delay), do: state

  defp grow(state), do: %{state | backoff: min(round(state.backoff * 1.5), state.backoff_max)}

  ## The OS process

  defp spawn_node(state) do
    opts = state.start
    cmd = Keyword.fetch!(opts, :cmd)
    args = node_args(opts, state.node, state.stop_timeout)

    # PYNODE_STOP_ON_EOF: the node stops when the Port's pipe closes, so it goes with this VM
    # even when the VM is killed and no terminate/2 runs.
    env =
      [
        {"PYNODE_COOKIE", Atom.to_string(state.cookie)},
        {"PYTHONUNBUFFERED", "1"},
        {"PYNODE_STOP_ON_EOF", "1"}
      ]
      |> merge_env(Enum.map(opts[:env] || [], fn {k, v} -> {to_string(k), to_string(v)} end))
      |> Enum.map(fn {k, v} -> {String.to_charlist(k), String.to_charlist(v)} end)

    port_opts =
      [:binary, :exit_status, :stderr_to_stdout, {:line, 8192}, args: args, env: env] ++
        if(opts[:cd], do: [cd: opts[:cd]], else: [])

    port = Port.open({:spawn_executable, cmd}, port_opts)
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    Logger.info("pynode: started #{cmd} as #{state.node} (OS pid #{os_pid})")

    state = %{
      state
      | port: port,
        os_pid: os_pid,
        tail: [],
        partial: [],
        started_at: System.monotonic_time(:millisecond)
    }

    schedule_connect(state, @connect_poll)
  end

  # The variables of `env:` (string names) replace those of the same name.
  defp merge_env(defaults, given),
    do: Enum.reject(defaults, fn {name, _} -> List.keymember?(given, name, 0) end) ++ given

  # The command and the log level are checked at start, so a wrong one is an error of start_link.
  defp start_opts(nil), do: nil

  defp start_opts(start) do
    if level = start[:log_level], do: python_level(level)
    Keyword.put(start, :cmd, executable(Keyword.fetch!(start, :cmd)))
  end

  defp executable(cmd) do
    cmd = to_string(cmd)

    cond do
      String.contains?(cmd, "/") and File.exists?(cmd) ->
        Path.expand(cmd)

      path = System.find_executable(cmd) ->
        path

      true ->
        raise ArgumentError, "pynode: cannot find the command #{inspect(cmd)} (start: [cmd: ...])"
    end
  end

  # What the library asks of the node, unless `args` has the flag (or `env:` its variable): its
  # name, no ./agents unless `--agents DIR` is given (an app that asks for none gets no warning
  # about it), its log as JSON lines at the level of `log_level:`, else Logger's, and a drain
  # (`--drain-timeout`) that ends before the SIGKILL of a stop.
  defp node_args(opts, node, stop_timeout) do
    args = Enum.map(opts[:args] || [], &to_string/1)
    env = for {name, _} <- opts[:env] || [], do: to_string(name)
    name_flag = if longnames?(node), do: "--name", else: "--sname"
    level = opts[:log_level]

    [
      {["--name", "--sname"], nil, [name_flag, Atom.to_string(node)]},
      {["--agents", "--no-agents"], nil, ["--no-agents"]},
      {["--log-format"], "PYNODE_LOG_FORMAT", ["--log-format", "json"]},
      {["--log-level"], if(level == nil, do: "PYNODE_LOG_LEVEL"),
       ["--log-level", python_level(level || Logger.level())]},
      {["--drain-timeout"], nil, ["--drain-timeout", drain_seconds(stop_timeout)]}
    ]
    |> Enum.reject(fn {flags, var, _} ->
      var in env or Enum.any?(args, &given?(&1, flags))
    end)
    |> Enum.flat_map(fn {_, _, default} -> default end)
    |> Kernel.++(args)
  end

  # A stop sends SIGTERM, which drains the node, and SIGKILL after :stop_timeout: the drain ends
  # before that (the runs still in flight are then cancelled, and their callers get that result),
  # a second ahead of it, or in half the time for a :stop_timeout under two seconds.
  defp drain_seconds(stop_timeout) do
    ms = max(stop_timeout - 1_000, div(stop_timeout, 2))
    :erlang.float_to_binary(ms / 1_000, decimals: 3)
  end

  defp given?(arg, flags),
    do: Enum.any?(flags, &(arg == &1 or String.starts_with?(arg, &1 <> "=")))

  @python_levels %{
    all: "debug",
    debug: "debug",
    info: "info",
    notice: "info",
    warning: "warning",
    warn: "warning",
    error: "error",
    critical: "critical",
    alert: "critical",
    emergency: "critical",
    none: "critical"
  }

  defp python_level(level) do
    case @python_levels do
      %{^level => name} ->
        name

      _ ->
        raise ArgumentError,
              "pynode: start: [log_level: #{inspect(level)}] is not a Logger level " <>
                "(:debug, :info, :notice, :warning, :error, :critical, :alert, :emergency)"
    end
  end

  ## The node's output

  @elixir_levels %{
    "debug" => :debug,
    "info" => :info,
    "warning" => :warning,
    "error" => :error,
    "critical" => :critical
  }

  # A JSON line of the node's log goes to Logger at its level, with its logger, node, agent and
  # run id as metadata; any other line (a traceback, what an agent prints, a node started with
  # other --log-format args) at :info. The tail keeps the text, for reason_line/1.
  defp output_line(state, line) do
    prefix = ["[", Atom.to_string(state.node), "] "]

    {level, text} =
      case log_record(line) do
        {:ok, level, message, metadata} ->
          Logger.log(level, [prefix | message], [{:pynode_node, state.node} | metadata])
          {level, message}

        :error ->
          Logger.info([prefix | line], pynode_node: state.node)
          {:info, line}
      end

    %{state | tail: Enum.take([{level, text} | state.tail], @tail_lines)}
  end

  defp log_record("{" <> _ = line) do
    with {:ok, %{"level" => name, "message" => message} = record} when is_binary(message) <-
           Pynode.JSON.decode(line) do
      metadata =
        for {key, field} <- [pynode_logger: "logger", agent: "agent", run_id: "run_id"],
            value = record[field],
            is_binary(value),
            do: {key, value}

      {:ok, Map.get(@elixir_levels, name, :info), message, metadata}
    else
      _ -> :error
    end
  end

  defp log_record(_line), do: :error

  defp flush_partial(%{partial: []} = state), do: state

  defp flush_partial(state),
    do: output_line(%{state | partial: []}, IO.iodata_to_binary(state.partial))

  defp stop_node(%{port: nil}), do: :ok

  defp stop_node(%{port: port, os_pid: os_pid, stop_timeout: timeout} = state) do
    # SIGTERM drains the node; one that drains already would take it as "stop at once".
    if state.draining == false, do: kill("-TERM", os_pid)

    receive do
      {^port, {:exit_status, _}} -> :ok
    after
      timeout ->
        Logger.warning("pynode: OS pid #{os_pid} did not stop within #{timeout} ms; killing it")
        kill("-KILL", os_pid)
    end
  end

  defp kill(signal, os_pid) do
    System.cmd("kill", [signal, Integer.to_string(os_pid)], stderr_to_stdout: true)
    :ok
  end

  ## Distribution

  defp distribute(node, client_name) do
    if Node.alive?() do
      :ok
    else
      [_, host] = node |> Atom.to_string() |> String.split("@", parts: 2)
      name = client_name || :"pynode_client_#{System.pid()}@#{host}"
      mode = if longnames?(node), do: :longnames, else: :shortnames

      with {:error, reason} <- start_distribution(name, mode),
           # As `erl -name` does: when no epmd answers, start one (`epmd -daemon`) and try again.
           {:ok, :started} <- start_epmd(reason) do
        deadline = System.monotonic_time(:millisecond) + @epmd_wait
        {:await_epmd, %{name: name, mode: mode, deadline: deadline}}
      else
        :ok -> :ok
        {:error, reason} -> {:error, not_started(name, reason)}
      end
    end
  end

  defp await_epmd(%{epmd: epmd} = state) do
    cond do
      match?({:ok, _}, :net_adm.names()) ->
        case start_distribution(epmd.name, epmd.mode) do
          :ok ->
            {:noreply, state, {:continue, :distributed}}

          {:error, reason} ->
            {:stop, {:distribution_not_started, not_started(epmd.name, reason)}, state}
        end

      System.monotonic_time(:millisecond) > epmd.deadline ->
        reason = "epmd did not answer within #{@epmd_wait} ms of its start"
        {:stop, {:distribution_not_started, not_started(epmd.name, reason)}, state}

      true ->
        Process.send_after(self(), :await_epmd, @epmd_poll)
        {:noreply, state}
    end
  end

  defp not_started(name, reason) do
    "this node is not distributed and could not start distribution as #{name}: " <>
      "#{reason}; epmd must be reachable or startable (epmd -daemon, port " <>
      "$ERL_EPMD_PORT or 4369), or start the app with --name/--sname and --cookie"
  end

  defp start_distribution(name, mode) do
    case :net_kernel.start([name, mode]) do
      {:ok, _} -> :ok
      {:error, {:already_started, _}} -> :ok
      {:error, reason} -> {:error, inspect(reason)}
    end
  end

  defp start_epmd(reason) do
    with {:error, :address} <- :net_adm.names(),
         epmd when is_binary(epmd) <- epmd_executable() do
      Logger.info("pynode: no epmd answers; starting #{epmd} -daemon")
      {_, _} = System.cmd(epmd, ["-daemon"], stderr_to_stdout: true)
      {:ok, :started}
    else
      {:ok, _names} -> {:error, reason}
      nil -> {:error, "#{reason} (no epmd answers, and no epmd executable was found)"}
      {:error, other} -> {:error, "#{reason} (epmd: #{inspect(other)})"}
    end
  end

  defp epmd_executable do
    erts =
      Path.join([
        to_string(:code.root_dir()),
        "erts-#{:erlang.system_info(:version)}",
        "bin",
        "epmd"
      ])

    case :os.find_executable(~c"epmd") do
      false -> if File.exists?(erts), do: erts
      path -> to_string(path)
    end
  end

  defp longnames?(node), do: Pynode.NodeName.longname?(node)
end
