defmodule Pynode.Call do
  @moduledoc false
  # GenServer.call to a process of the node, with the node's replies and the call's exits turned
  # into values: {:ok, v} | :ok | {:error, %Pynode.Error{}}. Never an exit.

  alias Pynode.Error

  @spec call(GenServer.server(), term(), timeout()) :: {:ok, term()} | :ok | {:error, Error.t()}
  def call(dest, request, timeout) do
    dest |> GenServer.call(request, timeout) |> reply()
  catch
    :exit, {reason, _call} -> {:error, exit_error(dest, reason, timeout)}
  end

  defp reply({:error, reason}), do: {:error, Error.from_reply(reason)}
  defp reply(other), do: other

  defp exit_error(_dest, {:nodedown, node}, _timeout),
    do: Error.nodedown(node, "is not connected")

  defp exit_error({name, node}, :noproc, _timeout),
    do: %Error{kind: :unknown_agent, message: "no process #{inspect(name)} on #{node}"}

  defp exit_error(dest, :timeout, timeout),
    do: %Error{kind: :timeout, message: "#{inspect(dest)} did not answer within #{timeout} ms"}

  defp exit_error(dest, reason, _timeout),
    do: %Error{
      kind: :internal_error,
      message: "call to #{inspect(dest)} exited: #{inspect(reason)}"
    }
end
