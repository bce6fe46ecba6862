defmodule Pynode.Approval do
  @moduledoc """
  A tool call that waits for a decision: the model called a tool given with
  `requires_approval: true` (`Pynode.Tool.new/1`), and the tool runs only once its call is
  approved (docs/protocol.md section 5).

      %Pynode.Approval{
        call_id: "c1.4f2a",                 # the call's id, the same in the run's events
        name: "delete_file",                # the tool the model called
        args: %{"path" => "/tmp/a.txt"},    # the model's arguments (string keys)
        run_ref: #Reference<...>,           # the run's reference, as in its messages
        reply_to: #PID<...>                 # the run's process on the Python node
      }

  Where one comes from:

    * `Pynode.Run.handle_info/2` returns `{:approval_required, approval}` in the process that
      started the run (it is the run's approver unless `approver:` says otherwise): a
      LiveView keeps it in its assigns and decides when a person clicks
    * `Pynode.stream/3` yields `{:approval_required, approval}`: the enumerating process is the
      stream's approver
    * a process given as `approver:` gets the raw message `{:pynode_approval, ref, map}`:
      `from_message/1` reads it
    * a run with `approver: :defer` (the default of `Pynode.run/3`) ends with them in
      `Pynode.Result`'s `:deferred`, without `run_ref` and `reply_to` (nothing waits on the node):
      decide them with `Pynode.resume/4`

  `Pynode.approve/2` sends the decision to `reply_to`, from any process: the run goes on. The
  run waits at most its `:timeout`; a decision that takes a person longer belongs in a run with
  `approver: :defer`, resumed later.

  ## Decisions

    * `:approve` - the tool runs with the model's arguments
    * `{:approve, new_args}` - the tool runs with these arguments instead (a map), checked against
      its parameters like the model's own: invalid ones go back to the model as a retry
    * `:deny` - the tool does not run; the model is told it was denied
    * `{:deny, message}` - the same, with `message` (a string) for the model

  An approver that exits, or whose node disconnects, before deciding denies the call.
  """

  @typedoc "A decision on a call (see the module doc)."
  @type decision :: :approve | {:approve, map()} | :deny | {:deny, String.t()}

  @typedoc "A call that waits for a decision (see the module doc)."
  @type t :: %__MODULE__{
          call_id: String.t(),
          name: String.t(),
          args: map(),
          run_ref: reference() | nil,
          reply_to: pid() | nil
        }

  @enforce_keys [:call_id, :name]
  defstruct [:call_id, :name, :run_ref, :reply_to, args: %{}]

  @doc """
  Reads the approval request a run sends its approver, `{:pynode_approval, run_ref, map}`:
  `{:ok, approval}`, or `:unknown` for any other message.

  For a process given as `approver:`, which gets the requests of runs it did not start:

      def handle_info(message, state) do
        case Pynode.Approval.from_message(message) do
          {:ok, approval} -> {:noreply, queue(state, approval)}
          :unknown -> {:noreply, state}
        end
      end
  """
  @spec from_message(term()) :: {:ok, t()} | :unknown
  def from_message(
        {:pynode_approval, ref, %{call_id: id, name: name, args: args, reply_to: reply_to}}
      )
      when is_reference(ref) and is_binary(id) and is_pid(reply_to),
      do:
        {:ok, %__MODULE__{call_id: id, name: name, args: args, run_ref: ref, reply_to: reply_to}}

  def from_message(_message), do: :unknown

  @doc false
  # One entry of a Result's `deferred` (docs/protocol.md section 4): nothing waits for it.
  @spec from_deferred(map()) :: t()
  def from_deferred(%{call_id: id, name: name} = call),
    do: %__MODULE__{call_id: id, name: name, args: Map.get(call, :args, %{})}

  @doc false
  # The decision as the node takes it, or an ArgumentError that says what is wrong.
  @spec check_decision!(term()) :: decision()
  def check_decision!(:approve), do: :approve
  def check_decision!(:deny), do: :deny
  def check_decision!({:approve, args} = decision) when is_map(args), do: decision
  def check_decision!({:deny, message} = decision) when is_binary(message), do: decision

  def check_decision!(other),
    do:
      raise(
        ArgumentError,
        "a decision must be :approve, {:approve, new_args} (a map), :deny or " <>
          "{:deny, message} (a string), got: #{inspect(other)}"
      )

  @doc false
  # The `approvals:` run option as the node takes it: a map of call id => decision. Given as a
  # map or a list of pairs, keyed by call id or by `Pynode.Approval`.
  @spec approvals!(term()) :: %{String.t() => decision()}
  def approvals!(approvals) when is_map(approvals) or is_list(approvals) do
    Map.new(approvals, fn
      {key, decision} ->
        {call_id!(key), check_decision!(decision)}

      other ->
        raise ArgumentError, "approvals: expected {call_id, decision}, got: #{inspect(other)}"
    end)
  end

  def approvals!(other),
    do:
      raise(
        ArgumentError,
        "approvals: must be a map of call id => decision, got: #{inspect(other)}"
      )

  defp call_id!(%__MODULE__{call_id: id}), do: id
  defp call_id!(id) when is_binary(id), do: id

  defp call_id!(other),
    do:
      raise(
        ArgumentError,
        "approvals: a key must be a call id (a string) or a Pynode.Approval, got: #{inspect(other)}"
      )
end
