defmodule Pynode.Result do
  @moduledoc """
  The result of a successful run.

    * `:output` - a string for text output; a map with string keys for structured output
    * `:messages` - the whole conversation: a JSON string, or a list of maps with
      `messages_as: :terms`; pass it back as `message_history:` to continue; see `Pynode.Messages`
    * `:new_messages` - this run's messages only, in the same form
    * `:usage` - `%{requests: n, input_tokens: n, output_tokens: n, tool_calls: n}`
    * `:run_id` - the run's id on the node
    * `:node` - the Python node that ran it (of a `Pynode.Cluster`, the member that took it)

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
          node: node() | nil
        }

  @derive {Inspect, except: [:messages, :new_messages]}
  defstruct [:output, :messages, :new_messages, :run_id, :node, usage: %{}]

  @doc false
  @spec from_map(map()) :: t()
  def from_map(map) when is_map(map) do
    %__MODULE__{
      output: Map.get(map, :output),
      messages: Map.get(map, :messages),
      new_messages: Map.get(map, :new_messages),
      usage: Map.get(map, :usage, %{}),
      run_id: Map.get(map, :run_id)
    }
  end
end
