defmodule Pynode.Test do
  @moduledoc """
  Models scripted from ExUnit: the test decides what the model says, turn by turn, and checks
  afterwards what each turn was sent. No provider, no API key, no network.

      script =
        Pynode.Test.script([
          Pynode.Test.tool_call("stock", %{sku: "A1"}),
          Pynode.Test.text("A1 is in stock.")
        ])

      {:ok, result} = Pynode.run(:shop, "Is A1 in stock?", model: script, tools: [stock_tool])
      assert result.output == "A1 is in stock."

      [first, second] = Pynode.Test.requests(script)
      assert [%{name: "stock"}] = first.info.tools
      assert length(second.messages) == 3   # the prompt, the tool call, the tool's return

  A script is a model: give it as `model:` to a run or in an agent spec. It is the node's
  `{:function, fun}` model (docs/protocol.md section 3): for each model request the Python node
  calls `fun.(messages, info)` in this node, `messages` being the conversation so far (lists of
  maps with string keys, as `messages_as: :terms` gives them) and `info` a map of what the model is
  offered: `:tools` (each `%{name:, description:, parameters:}`), `:output_schema` (a JSON Schema or
  `nil`), `:text_output` (whether plain text may end the run) and `:instructions`. Any function of
  arity 2 can be given as `model: {:function, fun}`; a script is one that answers from a list.

  A turn is what one model response says:

    * `text/1` - text; a list of strings is streamed as that many `{:text_delta, _}` events
    * `tool_call/2` - the model calls a tool (the run's tools, or the agent's)
    * `output/1` - the run's structured output (with an `:output` spec)
    * a list of those - one response with several parts (two tool calls at once)
    * a function of arity 2 - called with `messages` and `info`; returns one of the above

  A run that asks for more turns than the script has fails with `Pynode.Error` of kind
  `:model_error` saying which turn was missing. The script lives in a process linked to the
  process that made it (the test), so it ends with the test.
  """

  alias Pynode.Test.Script

  @typedoc "What one model response says (see the module doc)."
  @type turn ::
          {:text, String.t() | [String.t()]}
          | {:tool_call, String.t(), map()}
          | {:tool_call, String.t(), map(), String.t()}
          | {:output, map()}
          | String.t()
          | [turn()]
          | (list(), map() -> turn())

  @typedoc "One model request as the script got it."
  @type request :: %{messages: [map()], info: map()}

  @doc """
  A text response; a list of strings streams as that many text deltas.

      iex> Pynode.Test.text("Hello")
      {:text, "Hello"}
  """
  @spec text(String.t() | [String.t()]) :: turn()
  def text(text) when is_binary(text) or is_list(text), do: {:text, text}

  @doc """
  The model calls tool `name` with `args` (a map; atom or string keys).

      iex> Pynode.Test.tool_call("stock", %{sku: "A1"})
      {:tool_call, "stock", %{sku: "A1"}}
  """
  @spec tool_call(String.t(), map()) :: turn()
  def tool_call(name, args) when is_binary(name) and is_map(args), do: {:tool_call, name, args}

  @doc "Like `tool_call/2`, with the call id the model gives it."
  @spec tool_call(String.t(), map(), String.t()) :: turn()
  def tool_call(name, args, call_id) when is_binary(name) and is_map(args) and is_binary(call_id),
    do: {:tool_call, name, args, call_id}

  @doc """
  The run's structured output: a map that the run's output schema must accept (else the model
  is asked again, which takes the next turn).

      iex> Pynode.Test.output(%{total: 3})
      {:output, %{total: 3}}
  """
  @spec output(map()) :: turn()
  def output(value) when is_map(value), do: {:output, value}

  @doc "A scripted model that gives `turns` in order, one per model request (see the module doc)."
  @spec script([turn()]) :: Script.t()
  def script(turns) when is_list(turns) do
    {:ok, holder} = Agent.start_link(fn -> %{turns: turns, seen: []} end)
    %Script{holder: holder, model: {:function, &Script.respond(holder, &1, &2)}}
  end

  @doc "Adds `turns` after those the script has left."
  @spec add(Script.t(), [turn()]) :: :ok
  def add(%Script{holder: holder}, turns) when is_list(turns),
    do: Agent.update(holder, fn state -> %{state | turns: state.turns ++ turns} end)

  @doc "Every model request the script answered (or could not), oldest first."
  @spec requests(Script.t()) :: [request()]
  def requests(%Script{holder: holder}), do: Agent.get(holder, &Enum.reverse(&1.seen))

  @doc "How many turns the script has not given yet."
  @spec turns_left(Script.t()) :: non_neg_integer()
  def turns_left(%Script{holder: holder}), do: Agent.get(holder, &length(&1.turns))

  @doc false
  @spec model_term(term()) :: term()
  def model_term(%Script{model: model}), do: model
  def model_term(model), do: model
end
