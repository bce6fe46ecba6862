defmodule Pynode.ToolServer do
  @moduledoc false
  # Serves one run's Elixir tools: the run's tool_handler. It runs under Pynode.TaskSupervisor,
  # and so does each tool call, as a task of its own (calls of one run may overlap) bounded by
  # the tool's timeout. What the call returns, raises, throws or exits with - even a kill or a
  # linked crash - becomes {tool_result, CallId, Reply} sent to the run's reply_to, and this
  # server goes on. It ends when the run ends (stop/1) or when the process that started the run
  # exits, and takes its calls still running with it.

  alias Pynode.Tool

  @supervisor Pynode.TaskSupervisor

  @spec start([Tool.t()], pid(), map()) :: pid()
  def start(tools, owner, deps) do
    {:ok, pid} =
      Task.Supervisor.start_child(@supervisor, fn ->
        state = %{
          tools: Map.new(tools, &{&1.name, &1}),
          owner: Process.monitor(owner),
          deps: deps,
          calls: %{}
        }

        loop(state)
      end)

    pid
  end

  @stop_wait 5_000

  @spec stop(pid() | nil) :: :ok
  def stop(nil), do: :ok

  # Returns once the server and every tool process it started have exited, so that a run that
  # ends (a timeout, a cancel) leaves no tool of it running.
  def stop(pid) do
    mon = Process.monitor(pid)
    send(pid, :stop)

    receive do
      {:DOWN, ^mon, :process, _, _} -> :ok
    after
      @stop_wait ->
        Process.exit(pid, :kill)

        receive do
          {:DOWN, ^mon, :process, _, _} -> :ok
        end
    end
  end

  defp loop(state) do
    receive do
      {:pynode_tool_call, run_ref, %{call_id: id, name: name, args: args, reply_to: reply_to}} ->
        loop(start_call(state, run_ref, id, name, args, reply_to))

      {ref, {reply, failure}} when is_map_key(state.calls, ref) ->
        Process.demonitor(ref, [:flush])
        loop(answer(state, ref, reply, failure))

      {:DOWN, ref, :process, _pid, reason} when is_map_key(state.calls, ref) ->
        %{name: name} = state.calls[ref]
        reply = {:error, "tool #{name} exited: #{inspect(reason)}"}
        loop(answer(state, ref, reply, {:exit, reason, []}))

      {:tool_timeout, ref, timeout} when is_map_key(state.calls, ref) ->
        %{name: name, task: task} = state.calls[ref]
        _ = Task.shutdown(task, :brutal_kill)
        reply = {:error, "tool #{name} did not answer within #{timeout} ms"}
        loop(answer(state, ref, reply, {:exit, :timeout, []}))

      {:DOWN, mon, :process, _pid, _reason} when mon == state.owner ->
        shutdown(state)

      :stop ->
        shutdown(state)

      _other ->
        loop(state)
    end
  end

  defp start_call(state, run_ref, id, name, args, reply_to) do
    case state.tools do
      %{^name => tool} ->
        ctx = %{deps: state.deps, run_ref: run_ref, call_id: id, tool: name}
        meta = %{tool: name, call_id: id, args: args, node: node(reply_to), run_ref: run_ref}
        span = Pynode.Telemetry.tool_start(meta)
        task = Task.Supervisor.async_nolink(@supervisor, fn -> attempt(tool, args, ctx) end)

        call = %{
          id: id,
          reply_to: reply_to,
          name: name,
          task: task,
          timer: timer(tool, task),
          span: span
        }

        %{state | calls: Map.put(state.calls, task.ref, call)}

      _ ->
        send(
          reply_to,
          {:tool_result, id, {:error, "no tool named #{name} is served for this run"}}
        )

        state
    end
  end

  # `failure`: nil when the tool answered, else {kind, reason, stacktrace} of what ended it.
  defp answer(state, ref, reply, failure) do
    {%{id: id, reply_to: reply_to, timer: timer, span: span}, calls} = Map.pop(state.calls, ref)
    cancel_timer(timer)
    send(reply_to, {:tool_result, id, reply})

    case failure do
      nil ->
        Pynode.Telemetry.tool_stop(span, reply)

      {kind, reason, stacktrace} ->
        Pynode.Telemetry.tool_exception(span, kind, reason, stacktrace)
    end

    %{state | calls: calls}
  end

  defp timer(%Tool{timeout: :infinity}, _task), do: nil

  defp timer(%Tool{timeout: timeout}, task),
    do: Process.send_after(self(), {:tool_timeout, task.ref, timeout}, timeout)

  defp cancel_timer(nil), do: :ok
  defp cancel_timer(timer), do: Process.cancel_timer(timer)

  defp shutdown(state) do
    for {_ref, %{task: task, timer: timer, span: span}} <- state.calls do
      cancel_timer(timer)
      Task.shutdown(task, :brutal_kill)
      Pynode.Telemetry.tool_exception(span, :exit, :shutdown, [])
    end

    :ok
  end

  @doc false
  @spec invoke(Tool.t(), map(), map()) ::
          {:ok, term()} | {:error, String.t()} | {:retry, String.t()}
  def invoke(tool, args, ctx), do: tool |> attempt(args, ctx) |> elem(0)

  # The reply for the model, and nil, or {kind, reason, stacktrace} when the tool raised.
  defp attempt(%Tool{fun: fun, name: name}, args, ctx) do
    value = if is_function(fun, 2), do: fun.(args, ctx), else: fun.(args)

    reply =
      case value do
        {:ok, value} -> {:ok, value}
        {:error, message} -> {:error, text(message)}
        {:retry, message} -> {:retry, text(message)}
        value -> {:ok, value}
      end

    {reply, nil}
  rescue
    error ->
      message = "tool #{name} raised #{inspect(error.__struct__)}: #{Exception.message(error)}"
      {{:error, message}, {:error, error, __STACKTRACE__}}
  catch
    kind, reason ->
      {{:error, "tool #{name} failed: #{kind} #{inspect(reason)}"},
       {kind, reason, __STACKTRACE__}}
  end

  defp text(message) when is_binary(message), do: message
  defp text(message), do: inspect(message)
end
