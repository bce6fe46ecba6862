defmodule Pynode.Result do
  @moduledoc """
  The result of a successful run.

    * `:output` - a string for text output; a map with string keys for structured output; `nil`
      when the run paused for approval (`:deferred`)
    * `:messages` - the whole conversation: a JSON string, or a list of maps with
      `messages_as: :terms`; pass it back as `message_history:` to continue; see `Pynode.Messages`
    * `:new_messages` - this run's messages only, in the same form
    * `:usage` - `%{requests: n, input_tokens: n, output_tokens: n, tool_calls: n}`
    * `:run_id` - the run's id on the node
    * `:node` - the Python node that ran it (of a `Pynode.Cluster`, the member that took it)
    * `:deferred` - `[]`, or, when the run paused on tool calls that wait for approval (a run
      with `approver: :defer`, the default of `Pynode.run/3`), those calls as `Pynode.Approval`s
      (without `run_ref` and `reply_to`): decide them with `Pynode.resume/4`, which continues the
      conversation from `:messages`

  `inspect/1` (and so `IO.inspect/1` and test failures) leaves out `:messages` and
  `:new_messages`, which grow with the conversation; read them from the struct.
  """

  @type messages :: String.t() | [map()]
  @type t :: %__MODULE__{
          output: String.t() | map() | term(),
          messages: messages(),
          new_messages: messages(),
          usage: map(),
          run_id: String.t() | nil,
          node: node() | nil,
          deferred: [Pynode.Approval.t()]
        }

  @derive {Inspect, except: [:messages, :new_messages]}
  defstruct [:output, :messages, :new_messages, :run_id, :node, usage: %{}, deferred: []]

  @doc false
  @spec from_map(map()) :: t()
  def from_map(map) when is_map(map) do
    %__MODULE__{
      output: Map.get(map, :output),
      messages: Map.get(map, :messages),
      new_messages: Map.get(map, :new_messages),
      usage: Map.get(map, :usage, %{}),
      run_id: Map.get(map, :run_id),
      deferred: map |> Map.get(:deferred, []) |> Enum.map(&Pynode.Approval.from_deferred/1)
    }
  end
end
