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
          {:approval_required, %Pynode.Approval{} = call} -> {:noreply, ask_a_person(state, call)}
          :unknown -> {:noreply, state}
        end
      end

  `{:approval_required, call}` is a call of a tool with `requires_approval: true` that waits for
  this process's decision (it is the run's approver unless `approver:` names another):
  `Pynode.approve/2` decides it, from this process or any other. The run's events also say so,
  for every process that gets them: `{:event, {:approval_required, name, args, call_id}}` before
  the request, and `{:event, {:approval, call_id, decision}}` once it is decided.

  A run whose node or agent goes away ends as `{:error, %Pynode.Error{kind: :nodedown}}` (or
  `:unknown_agent`), never before its real final result: a result already received wins. When the
  run's `:timeout` passes, `handle_info/2` returns `{:error, %Pynode.Error{kind: :timeout}}` and the
  run is cancelled on the node; its late messages are taken out of the mailbox.

  A run of a `Pynode.Cluster`'s agent started with `retry: :always` may instead be started again
  on another member when its node goes away: `handle_info/2` then returns
  `{:retried, new_run, error}`, and `new_run` takes the old run's place (its messages carry
  another reference). `agent` of a run is `{name, node}`: the node that runs it.
  """

  alias Pynode.{Error, Result, ToolServer}

  @typedoc "A run in flight."
  @type t :: %__MODULE__{
          ref: reference(),
          agent: {atom(), node()},
          dest: pid() | {atom(), node()} | nil,
          monitor: reference(),
          tool_server: pid() | nil,
          deadline: integer(),
          timeout: timeout(),
          timer: reference() | nil,
          owner: pid(),
          again: map() | nil,
          span: Pynode.Telemetry.span()
        }

  @typedoc "A stream event of a run (docs/protocol.md section 5)."
  @type event ::
          {:text_delta, String.t()}
          | {:output_delta, map()}
          | {:tool_call, String.t(), map(), String.t()}
          | {:tool_result, String.t(), term(), String.t()}
          | {:tool_error, String.t(), String.t(), String.t()}
          | {:approval_required, String.t(), map(), String.t()}
          | {:approval, String.t(), :approve | {:approve, map()} | {:deny, String.t()}}
          | {:retry, Error.t()}

  @enforce_keys [:ref, :agent, :monitor, :deadline, :owner]
  # `dest` is where the run's requests go (the member's pid for a cluster's run, else the
  # agent's `{name, node}`); `again` is what a cluster's run with `retry: :always` needs to start
  # once more elsewhere (nil otherwise).
  defstruct [
    :ref,
    :agent,
    :dest,
    :monitor,
    :tool_server,
    :deadline,
    :timeout,
    :timer,
    :owner,
    :again,
    :span
  ]

  # How long a cancelled run may take to send its final result, which is then dropped.
  @drain_ms 5_000

  @doc """
  Classifies a message received by the process that started `run`.

  Returns `{:event, event}`, `{:done, result}` and `{:error, error}` for the run's messages (the
  last two end it), `{:approval_required, %Pynode.Approval{}}` for a tool call that waits for
  this process's decision (`Pynode.approve/2`), `{:retried, new_run, error}` when a cluster's run
  with `retry: :always` lost its node and started again on another member (go on with
  `new_run`), or `:unknown` for any other message.
  """
  @spec handle_info(term(), t()) ::
          {:event, event()}
          | {:done, Result.t()}
          | {:error, Error.t()}
          | {:approval_required, Pynode.Approval.t()}
          | {:retried, t(), Error.t()}
          | :unknown
  def handle_info(message, %__MODULE__{} = run),
    do: message |> classify(run) |> Pynode.Telemetry.run_ended(run)

  defp classify({:pynode_event, ref, event}, %__MODULE__{ref: ref}), do: {:event, event}

  defp classify({:pynode_approval, ref, _call} = message, %__MODULE__{ref: ref}) do
    case Pynode.Approval.from_message(message) do
      {:ok, approval} -> {:approval_required, approval}
      :unknown -> :unknown
    end
  end

  defp classify({:pynode_result, ref, result}, %__MODULE__{ref: ref} = run) do
    finish(run)
    outcome(result, run)
  end

  defp classify({:DOWN, mon, :process, _, reason}, %__MODULE__{monitor: mon} = run),
    do: went_away(run, reason)

  defp classify({:pynode_timeout, ref}, %__MODULE__{ref: ref} = run) do
    # Without its span: the run's end is this timeout, not a cancel by its caller.
    abandon(%{run | span: nil})
    {:error, timeout_error(run)}
  end

  defp classify(_message, %__MODULE__{}), do: :unknown

  ## Internal: used by Pynode

  @doc false
  # `mode`: :quiet and :events are a `Pynode.run/3` (the caller waits), :stream a
  # `Pynode.stream/3` (the caller enumerates its events and approvals), :start_run a run whose
  # messages the caller reads with handle_info/2.
  @spec start(Pynode.agent(), iodata(), keyword(), :events | :quiet | :stream | :start_run) ::
          {:ok, t()} | {:error, Error.t()}
  def start(agent, prompt, opts, mode) do
    opts = opts |> Keyword.validate!(Pynode.run_option_keys()) |> Pynode.Trace.options()
    span = Pynode.Telemetry.run_start(agent, opts)

    try do
      case start_run(agent, prompt, opts, mode) do
        {:ok, run} ->
          {:ok, %{run | span: span}}

        {:error, error} ->
          Pynode.Telemetry.run_not_started(span, error)
          {:error, error}
      end
    catch
      kind, reason ->
        Pynode.Telemetry.run_raised(span, kind, reason, __STACKTRACE__)
        :erlang.raise(kind, reason, __STACKTRACE__)
    end
  end

  defp start_run(agent, prompt, opts, mode) do
    opts = Keyword.validate!(opts, Pynode.run_option_keys())
    timeout = Keyword.get(opts, :timeout, 60_000)
    deadline = System.monotonic_time(:millisecond) + timeout

    case Pynode.Agent.resolve(agent, opts[:pynode]) do
      {:ok, dest} ->
        start_on(dest, dest, prompt, opts, mode, deadline, timeout)

      {:cluster, cluster, name} ->
        again = %{
          cluster: cluster,
          name: name,
          prompt: prompt,
          opts: opts,
          mode: mode,
          timeout: timeout,
          pick: pick_option(opts[:pick]),
          retry: retry_option(opts[:retry]),
          tried: []
        }

        start_member(again, deadline, [])

      {:error, error} ->
        {:error, error}
    end
  end

  defp start_on(dest, agent, prompt, opts, mode, deadline, timeout) do
    {node_opts, tool_server} = node_options(opts, mode)
    mon = Process.monitor(dest)

    case Pynode.Call.call(dest, {:start_run, prompt, node_opts}, remaining(deadline)) do
      {:ok, ref} when is_reference(ref) ->
        run = %__MODULE__{
          ref: ref,
          agent: agent,
          dest: dest,
          monitor: mon,
          tool_server: tool_server,
          deadline: deadline,
          timeout: timeout,
          owner: self()
        }

        if mode == :start_run,
          do:
            {:ok,
             %{
               run
               | timer: Process.send_after(self(), {:pynode_timeout, ref}, remaining(deadline))
             }},
          else: {:ok, run}

      other ->
        Process.demonitor(mon, [:flush])
        ToolServer.stop(tool_server)
        {:error, start_error(other)}
    end
  end

  ## A cluster's agent: a member of its :pg group, another one when it did not take the run

  # The member's answer (or the call's exit) says the run did not start there: another member
  # may take it. Any other error is the run's own (a bad option fails the same everywhere), and
  # a timeout used up the run's time.
  @not_taken [:nodedown, :unknown_agent, :draining, :overloaded]

  defp start_member(again, deadline, refused) do
    candidates = Pynode.Cluster.members_of(again.cluster, again.name) -- again.tried

    case candidates do
      [] ->
        {:error, no_member(again, refused)}

      _ ->
        pid = pick(again.pick, candidates)
        agent = {again.name, node(pid)}

        case start_on(pid, agent, again.prompt, again.opts, again.mode, deadline, again.timeout) do
          {:ok, run} ->
            again = %{again | tried: [pid | again.tried]}
            {:ok, %{run | again: if(again.retry == :always, do: again)}}

          {:error, %Error{kind: kind} = error}
          when kind in @not_taken and again.retry != :never ->
            again = %{again | tried: [pid | again.tried]}
            start_member(again, deadline, [{node(pid), error} | refused])

          {:error, error} ->
            {:error, error}
        end
    end
  end

  defp pick(:random, members), do: Enum.random(members)

  defp pick(:local, members) do
    here = host(node())

    case Enum.filter(members, &(host(node(&1)) == here)) do
      [] -> Enum.random(members)
      local -> Enum.random(local)
    end
  end

  defp pick(fun, members) do
    case fun.(members) do
      pid when is_pid(pid) ->
        if pid in members,
          do: pid,
          else:
            raise(
              ArgumentError,
              "the pick: function returned #{inspect(pid)}, which is not one of the members " <>
                "it was given: #{inspect(members)}"
            )

      other ->
        raise ArgumentError,
              "the pick: function must return one of the pids it is given, got: " <>
                inspect(other)
    end
  end

  defp host(node), do: node |> Atom.to_string() |> String.split("@") |> List.last()

  defp pick_option(nil), do: :random
  defp pick_option(pick) when pick in [:random, :local] or is_function(pick, 1), do: pick

  defp pick_option(other),
    do:
      raise(
        ArgumentError,
        "pick: must be :random, :local or a function of the members' pids, got: #{inspect(other)}"
      )

  defp retry_option(nil), do: :safe
  defp retry_option(retry) when retry in [:safe, :always, :never], do: retry

  defp retry_option(other),
    do: raise(ArgumentError, "retry: must be :safe, :always or :never, got: #{inspect(other)}")

  defp no_member(%{cluster: cluster, name: name}, []),
    do: %Error{
      kind: :nodedown,
      message:
        "no member of #{inspect(cluster.name)} serves the agent #{inspect(name)}: no node of " <>
          "it has the agent in the :pg scope #{inspect(cluster.scope)} now"
    }

  defp no_member(%{cluster: cluster, name: name}, refused) do
    refused = Enum.reverse(refused)

    why =
      Enum.map_join(refused, ", ", fn {node, %Error{kind: kind, message: message}} ->
        case kind do
          :draining -> "#{node} is draining"
          :overloaded -> "#{node} is overloaded (#{message})"
          :nodedown -> "#{node} is not connected"
          :unknown_agent -> "#{node} no longer has it"
        end
      end)

    kind =
      if Enum.all?(refused, &match?({_, %Error{kind: :overloaded}}, &1)),
        do: :overloaded,
        else: :nodedown

    %Error{
      kind: kind,
      message: "no member of #{inspect(cluster.name)} took the run of #{inspect(name)}: #{why}"
    }
  end

  defp start_error({:error, %Error{} = error}), do: error

  defp start_error(other),
    do: %Error{kind: :internal_error, message: "unexpected start_run reply: #{inspect(other)}"}

  defp node_options(opts, mode) do
    {tools, opts} = Keyword.pop(opts, :tools, [])
    {output, opts} = Keyword.pop(opts, :output)
    opts = Keyword.drop(opts, [:timeout, :on_event, :pynode, :pick, :retry])
    node_opts = opts |> Map.new() |> model_option() |> approval_options(mode)

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

  # A `Pynode.run/3` waits in its caller, which could never decide: its calls wait in the result
  # (`:deferred`) unless another process approves them.
  defp approval_options(node_opts, mode) do
    node_opts =
      case node_opts do
        %{approvals: approvals} -> %{node_opts | approvals: Pynode.Approval.approvals!(approvals)}
        _ -> node_opts
      end

    approver = Map.get(node_opts, :approver)
    check_approver!(approver)

    cond do
      mode not in [:quiet, :events] ->
        node_opts

      approver == nil ->
        Map.put(node_opts, :approver, :defer)

      approver == self() ->
        raise ArgumentError,
              "approver: the process that calls Pynode.run/3 waits for the run and cannot decide " <>
                "its calls: give another process, or :defer (the default), or use " <>
                "Pynode.stream/3 or Pynode.start_run/3, whose caller may approve"

      true ->
        node_opts
    end
  end

  defp check_approver!(approver) when approver in [nil, :defer] or is_pid(approver), do: :ok
  defp check_approver!({name, node}) when is_atom(name) and is_atom(node), do: :ok

  defp check_approver!(other),
    do:
      raise(
        ArgumentError,
        "approver: must be a pid, {name, node} or :defer, got: #{inspect(other)}"
      )

  defp deprecated_output_schema(%{output_schema: _} = node_opts) do
    IO.warn(
      "the run option :output_schema is deprecated: use :output (a JSON Schema map, a keyword spec or :text)"
    )

    node_opts
  end

  defp deprecated_output_schema(node_opts), do: node_opts

  @doc false
  # Waits for the run's next message: an event, its end, or the deadline (which cancels it).
  @spec next(t()) ::
          {:event, event()}
          | {:done, Result.t()}
          | {:error, Error.t()}
          | {:approval_required, Pynode.Approval.t()}
          | {:retried, t(), Error.t()}
  def next(%__MODULE__{ref: ref, monitor: mon} = run) do
    receive do
      {:pynode_event, ^ref, _event} = message -> handle_info(message, run)
      {:pynode_approval, ^ref, _call} = message -> handle_info(message, run)
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

      {:retried, run, error} ->
        if on_event, do: on_event.({:retry, error})
        await(run, on_event)

      {:approval_required, approval} ->
        # Only when `approver:` names this very process by its registered name: it waits here.
        _ = Pynode.approve(approval, {:deny, "the approver is waiting for the run to end"})
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
      Pynode.Telemetry.run_cancelled(run)
      until = System.monotonic_time(:millisecond) + @drain_ms
      mon = Process.monitor(run.dest)
      _ = Pynode.Call.call(run.dest, {:cancel, ref}, @drain_ms)
      drain(ref, mon, until)
      Process.demonitor(mon, [:flush])
    end

    finish(run)
  end

  defp drain(ref, mon, until) do
    receive do
      {:pynode_event, ^ref, _} -> drain(ref, mon, until)
      {:pynode_approval, ^ref, _} -> drain(ref, mon, until)
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
      {:pynode_approval, ^ref, _} -> flush_events(ref)
    after
      0 -> :ok
    end
  end

  # The agent or its node went away: a final result already in the mailbox wins.
  defp went_away(%__MODULE__{ref: ref, agent: {name, node}} = run, reason) do
    receive do
      {:pynode_result, ^ref, result} ->
        finish(run)
        outcome(result, run)
    after
      0 ->
        finish(run)
        error = down_error(name, node, reason)

        case run.again do
          %{} = again when reason == :noconnection -> start_again(again, run, error)
          _ -> {:error, error}
        end
    end
  end

  # retry: :always: the run lost with its node starts once more on a member not tried yet.
  defp start_again(again, run, error) do
    case start_member(again, run.deadline, []) do
      {:ok, new_run} ->
        {:retried, new_run, error}

      {:error, %Error{message: why}} ->
        {:error, %{error | message: "#{error.message}; it could not start again: #{why}"}}
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

  defp outcome({:ok, result}, %__MODULE__{agent: {_name, node}}) when is_map(result),
    do: {:done, %{Result.from_map(result) | node: node}}

  defp outcome({:error, reason}, _run), do: {:error, Error.from_reply(reason)}

  defp outcome(other, _run),
    do:
      {:error, %Error{kind: :internal_error, message: "unexpected run result: #{inspect(other)}"}}

  defp remaining(%__MODULE__{deadline: deadline}), do: remaining(deadline)
  defp remaining(deadline), do: max(deadline - System.monotonic_time(:millisecond), 0)

  defp timeout_error(%__MODULE__{agent: {name, node}, timeout: timeout}),
    do: %Error{
      kind: :timeout,
      message:
        "the run of #{inspect(name)} on #{node} did not end within #{timeout} ms; it was cancelled"
    }
end
