defmodule Pynode.ToolServer do
  @moduledoc false
  # Serves one run's Elixir tools: the run's tool_handler. Each tool call runs in a process of its
  # own (calls of one run may overlap), bounded by the tool's timeout; its return value, raise,
  # throw or exit becomes {tool_result, CallId, Reply} sent to the run's reply_to. It ends when
  # the run ends (stop/1) or when the process that started the run exits.

  alias Pynode.Tool

  @spec start([Tool.t()], pid(), map()) :: pid()
  def start(tools, owner, deps) do
    spawn(fn ->
      state = %{
        tools: Map.new(tools, &{&1.name, &1}),
        owner: Process.monitor(owner),
        deps: deps,
        calls: %{}
      }

      loop(state)
    end)
  end

  @spec stop(pid() | nil) :: :ok
  def stop(nil), do: :ok

  def stop(pid) do
    send(pid, :stop)
    :ok
  end

  defp loop(state) do
    receive do
      {:pynode_tool_call, run_ref, %{call_id: id, name: name, args: args, reply_to: reply_to}} ->
        loop(start_call(state, run_ref, id, name, args, reply_to))

      {:DOWN, mon, :process, _pid, reason} when is_map_key(state.calls, mon) ->
        {{id, reply_to, name, timer, _pid}, calls} = Map.pop(state.calls, mon)
        cancel_timer(timer)
        send(reply_to, {:tool_result, id, worker_reply(name, reason)})
        loop(%{state | calls: calls})

      {:tool_timeout, mon, timeout} when is_map_key(state.calls, mon) ->
        {{id, reply_to, name, _timer, pid}, calls} = Map.pop(state.calls, mon)
        Process.demonitor(mon, [:flush])
        Process.exit(pid, :kill)

        send(
          reply_to,
          {:tool_result, id, {:error, "tool #{name} did not answer within #{timeout} ms"}}
        )

        loop(%{state | calls: calls})

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
        {pid, mon} = spawn_monitor(fn -> exit({:pynode_reply, invoke(tool, args, ctx)}) end)
        timer = tool_timer(tool.timeout, mon)
        %{state | calls: Map.put(state.calls, mon, {id, reply_to, name, timer, pid})}

      _ ->
        send(
          reply_to,
          {:tool_result, id, {:error, "no tool named #{name} is served for this run"}}
        )

        state
    end
  end

  defp tool_timer(:infinity, _mon), do: nil

  defp tool_timer(timeout, mon),
    do: Process.send_after(self(), {:tool_timeout, mon, timeout}, timeout)

  defp cancel_timer(nil), do: :ok
  defp cancel_timer(timer), do: Process.cancel_timer(timer)

  defp shutdown(state) do
    for {mon, {_id, _reply_to, _name, timer, pid}} <- state.calls do
      Process.demonitor(mon, [:flush])
      cancel_timer(timer)
      Process.exit(pid, :kill)
    end

    :ok
  end

  defp worker_reply(_name, {:pynode_reply, reply}), do: reply
  defp worker_reply(name, reason), do: {:error, "tool #{name} exited: #{inspect(reason)}"}

  @doc false
  @spec invoke(Tool.t(), map(), map()) ::
          {:ok, term()} | {:error, String.t()} | {:retry, String.t()}
  def invoke(%Tool{fun: fun, name: name}, args, ctx) do
    value = if is_function(fun, 2), do: fun.(args, ctx), else: fun.(args)

    case value do
      {:ok, value} -> {:ok, value}
      {:error, message} -> {:error, text(message)}
      {:retry, message} -> {:retry, text(message)}
      value -> {:ok, value}
    end
  rescue
    error ->
      {:error, "tool #{name} raised #{inspect(error.__struct__)}: #{Exception.message(error)}"}
  catch
    kind, reason -> {:error, "tool #{name} failed: #{kind} #{inspect(reason)}"}
  end

  defp text(message) when is_binary(message), do: message
  defp text(message), do: inspect(message)
end
