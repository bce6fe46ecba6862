defmodule Pynode.Error do
  @moduledoc """
  The error of a failed call or run: `{:error, %Pynode.Error{kind: kind, message: text}}`.

  It is an exception, so the `!` functions raise it and `Exception.message/1` reads it.

  ## Error kinds

  The node's kinds, exactly as it sends them (PROTOCOL.md section 6):
  `:bad_request`, `:bad_spec`, `:unknown_agent`, `:already_exists`, `:model_unavailable`,
  `:model_http_error`, `:model_error`, `:unexpected_model_behavior`, `:usage_limit_exceeded`,
  `:tool_error`, `:timeout`, `:cancelled`, `:overloaded`, `:internal_error`.

  And two from this side:

    * `:nodedown` - the Python node is not connected, or went away while the run was going on
    * `:timeout` - the run's `:timeout` passed (the run was cancelled on the node)

  The client also uses three of the node's kinds for what it sees itself, never before the
  run's own final result: `:unknown_agent` when the agent's process is not there (`noproc`),
  `:cancelled` when the agent's process exited during the run without a result reaching you,
  and `:internal_error` when a call to the node exited for a reason none of the above covers.

  ## Examples

      iex> Exception.message(%Pynode.Error{kind: :nodedown, message: "py@127.0.0.1 is not connected"})
      "nodedown: py@127.0.0.1 is not connected"
  """

  @typedoc "An error kind: one of the node's (PROTOCOL.md section 6), or `:nodedown`."
  @type kind ::
          :bad_request
          | :bad_spec
          | :unknown_agent
          | :already_exists
          | :model_unavailable
          | :model_http_error
          | :model_error
          | :unexpected_model_behavior
          | :usage_limit_exceeded
          | :tool_error
          | :timeout
          | :cancelled
          | :overloaded
          | :internal_error
          | :nodedown

  @type t :: %__MODULE__{kind: kind(), message: String.t()}

  defexception [:kind, :message]

  @impl true
  @spec message(t()) :: String.t()
  def message(%__MODULE__{kind: kind, message: message}), do: "#{kind}: #{message}"

  @doc false
  @spec from_reply({atom(), term()}) :: t()
  def from_reply({kind, message}) when is_atom(kind) and is_binary(message),
    do: %__MODULE__{kind: kind, message: message}

  def from_reply({kind, message}) when is_atom(kind),
    do: %__MODULE__{kind: kind, message: inspect(message)}

  def from_reply(other), do: %__MODULE__{kind: :internal_error, message: inspect(other)}

  @doc false
  @spec nodedown(node(), String.t()) :: t()
  def nodedown(node, why), do: %__MODULE__{kind: :nodedown, message: "#{node} #{why}"}
end
