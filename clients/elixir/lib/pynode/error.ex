defmodule Pynode.Error do
  @moduledoc """
  The error of a failed call or run: `{:error, %Pynode.Error{kind: kind, message: text}}`.

  It is an exception, so the `!` functions raise it and `Exception.message/1` reads it.

  ## Error kinds

  The node's kinds, exactly as it sends them (docs/protocol.md section 6):
  `:bad_request`, `:bad_spec`, `:unknown_agent`, `:already_exists`, `:model_unavailable`,
  `:model_http_error`, `:model_error`, `:unexpected_model_behavior`, `:usage_limit_exceeded`,
  `:tool_error`, `:timeout`, `:cancelled`, `:overloaded`, `:internal_error`, `:draining`; and,
  from providers:

    * `:rate_limited` - HTTP 429 after the model's own retries; the message says the provider's
      retry-after when it gave one. Back off, or name a `fallback` model.
    * `:auth_failed` - HTTP 401/403: the node's API key for that model is missing or wrong. Retrying
      will not help; fix the key (the message never shows it).
    * `:model_timeout` - the provider sent no answer, or no next chunk, within the model's
      timeouts (`settings: %{timeout: seconds}`).
    * `:model_http_error` - any other HTTP status, or the provider could not be reached.

  And two from this side:

    * `:nodedown` - the Python node is not connected, or went away while the run was going on;
      for an agent of a `Pynode.Cluster`, also that no member could take the run (the message
      says `no member of MyApp.Py ...` and why)
    * `:timeout` - the run's `:timeout` passed (the run was cancelled on the node)

  The client also uses three of the node's kinds for what it sees itself, never before the
  run's own final result: `:unknown_agent` when the agent's process is not there (`noproc`),
  `:cancelled` when the agent's process exited during the run without a result reaching you,
  and `:internal_error` when a call to the node exited for a reason none of the above covers.

  ## Examples

      iex> Exception.message(%Pynode.Error{kind: :nodedown, message: "py@127.0.0.1 is not connected"})
      "nodedown: py@127.0.0.1 is not connected"
  """

  @typedoc "An error kind: one of the node's (docs/protocol.md section 6), or `:nodedown`."
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
          | :rate_limited
          | :auth_failed
          | :model_timeout
          | :draining
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
