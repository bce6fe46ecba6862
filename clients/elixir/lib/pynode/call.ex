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

  @doc false
  # The same request sent without waiting (gen_server:send_request/2): its answer arrives as a
  # message, read with check_response/3. The caller goes on serving meanwhile.
  @spec send_request(GenServer.server(), term()) :: reference()
  def send_request(dest, request), do: :gen_server.send_request(dest, request)

  @doc false
  # :no_reply when `message` is not the answer to `request`; else the answer as call/3 gives it.
  @spec check_response(term(), reference(), GenServer.server()) ::
          :no_reply | {:ok, term()} | :ok | {:error, Error.t()}
  def check_response(message, request, dest) do
    case :gen_server.check_response(message, request) do
      :no_reply -> :no_reply
      {:reply, reply} -> reply(reply)
      {:error, {reason, _server}} -> {:error, exit_error(dest, reason, :infinity)}
    end
  end

  @doc false
  # Gives up on a request: its answer, if it still comes, is dropped by the BEAM (the request's
  # alias goes with its monitor).
  @spec abandon_request(reference()) :: :ok
  def abandon_request(request) do
    Process.demonitor(request, [:flush])
    :ok
  end

  defp reply({:error, reason}), do: {:error, Error.from_reply(reason)}
  defp reply(other), do: other

  defp exit_error(_dest, {:nodedown, node}, _timeout),
    do: Error.nodedown(node, "is not connected")

  defp exit_error({_name, node}, :noconnection, _timeout),
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
