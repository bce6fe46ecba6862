defmodule Pynode.Messages do
  @moduledoc """
  Reading and trimming a conversation: the `messages` and `new_messages` of a `Pynode.Result`.

  A result carries pydantic-ai's message list, by default as the JSON its
  `ModelMessagesTypeAdapter` writes, or with `messages_as: :terms` as the same structure in maps
  with binary keys. Every function here takes either form, or the `%Pynode.Result{}` itself (its
  `messages`, the whole conversation), and works on the maps:

    * a message is a request (`"kind" => "request"`: what was sent to the model) or a response
      (`"kind" => "response"`: what the model answered), with a list of `"parts"`
    * a part has a `"part_kind"`: in requests `"system-prompt"`, `"user-prompt"`, `"tool-return"`
      (a tool's answer to a call, `"outcome"` `"success"`, `"retried"`, `"failed"`, ...),
      `"retry-feedback"`; in responses `"text"`, `"tool-call"` (`"tool_name"`, `"args"` and
      `"tool_call_id"`), `"thinking"`; and others, which are kept as they are

  A turn starts at a request that carries a user prompt and runs to the next one. Any list of maps
  returned here (`keep_last/3`, `decode/1`) can be passed back as a run's `message_history:`.

      {:ok, result} = Pynode.run(:assistant, "How many bolts are left?")
      Pynode.Messages.tool_calls(result)
      #=> [%{name: "stock", args: %{"item" => "bolts"}, call_id: "call_1"}]
      Pynode.Messages.last_text(result)
      #=> "There are 42 bolts."
      history = Pynode.Messages.keep_last(result, 10)
      {:ok, next} = Pynode.run(:assistant, "And nuts?", message_history: history)
  """

  @typedoc "One message: a map with binary keys, as pydantic-ai serializes it."
  @type message :: %{required(String.t()) => term()}

  @typedoc "Messages in any form: the JSON of a result, its list of maps, or the result itself."
  @type messages :: String.t() | [message()] | Pynode.Result.t()

  @typedoc "A tool call: `args` is a map, or the model's text when it is not a JSON object."
  @type tool_call :: %{name: String.t(), args: map() | String.t(), call_id: String.t()}

  @typedoc "A tool's answer to a call, with pydantic-ai's outcome (`\"success\"`, `\"retried\"`, ...)."
  @type tool_return :: %{
          name: String.t(),
          content: term(),
          call_id: String.t(),
          outcome: String.t()
        }

  # The request parts that answer the response before them.
  @answers ["tool-return", "retry-prompt", "retry-feedback"]

  @doc """
  Decodes messages into the list of maps the other functions work on.

  A JSON binary is decoded; a list of maps (`messages_as: :terms`) is returned as it is; a
  `%Pynode.Result{}` gives its `messages`. Either way every message must be a map with a `"kind"`
  of `"request"` or `"response"` and a list of `"parts"`, each a map with a `"part_kind"`.

      iex> Pynode.Messages.decode(~s([{"kind": "request", "parts": [{"part_kind": "user-prompt", "content": "Hi"}]}]))
      {:ok, [%{"kind" => "request", "parts" => [%{"part_kind" => "user-prompt", "content" => "Hi"}]}]}

      iex> Pynode.Messages.decode(~s({"kind": "request"}))
      {:error, "messages must be a list, got a map"}
  """
  @spec decode(messages()) :: {:ok, [message()]} | {:error, String.t()}
  def decode(%Pynode.Result{messages: messages}), do: decode(messages)

  def decode(json) when is_binary(json) do
    case Pynode.JSON.decode(json) do
      {:ok, messages} -> check(messages)
      {:error, message} -> {:error, "messages are not valid JSON: " <> message}
    end
  end

  def decode(messages), do: check(messages)

  @doc """
  Decodes messages as `decode/1` does, raising `ArgumentError` when they are not messages.

      iex> Pynode.Messages.decode!([])
      []
  """
  @spec decode!(messages()) :: [message()]
  def decode!(messages) do
    case decode(messages) do
      {:ok, messages} -> messages
      {:error, reason} -> raise ArgumentError, reason
    end
  end

  @doc """
  The tool calls the model made, in order, as `%{name: name, args: args, call_id: id}`.

  `args` is a map: pydantic-ai keeps a call's arguments as the model sent them, a map or a JSON
  text, and a text is decoded here (an empty one is `%{}`). A text that is not a JSON object is
  left as the binary it is. The calls of output tools (`final_result`, when a run's output is
  structured and the model answers through a tool) are tool calls too, and are listed.

      iex> Pynode.Messages.tool_calls([
      ...>   %{"kind" => "request", "parts" => [%{"part_kind" => "user-prompt", "content" => "Stock?"}]},
      ...>   %{"kind" => "response", "parts" => [
      ...>     %{"part_kind" => "tool-call", "tool_name" => "stock", "args" => ~s({"item": "bolts"}), "tool_call_id" => "c1"},
      ...>     %{"part_kind" => "tool-call", "tool_name" => "price", "args" => %{"item" => "bolts"}, "tool_call_id" => "c2"}
      ...>   ]}
      ...> ])
      [%{name: "stock", args: %{"item" => "bolts"}, call_id: "c1"}, %{name: "price", args: %{"item" => "bolts"}, call_id: "c2"}]
  """
  @spec tool_calls(messages()) :: [tool_call()]
  def tool_calls(messages) do
    for %{"kind" => "response", "parts" => parts} <- decode!(messages),
        %{"part_kind" => "tool-call"} = part <- parts do
      %{name: part["tool_name"], args: args(part["args"]), call_id: part["tool_call_id"]}
    end
  end

  defp args(nil), do: %{}
  defp args(""), do: %{}
  defp args(args) when is_map(args), do: args

  defp args(text) when is_binary(text) do
    case Pynode.JSON.decode(text) do
      {:ok, args} when is_map(args) -> args
      _ -> text
    end
  end

  defp args(other), do: other

  @doc """
  The answers of tools to the model's calls, in order, as
  `%{name: name, content: content, call_id: id, outcome: outcome}`.

  `content` is what the tool returned, as pydantic-ai serialized it; `outcome` is `"success"`, or
  `"retried"` when the tool asked the model to try again (`content` is then its message), or
  `"failed"`, `"denied"`, `"interrupted"`. A retry prompt of an older history (`"retry-prompt"`
  with a tool name) is listed with the outcome `"retried"`.

      iex> Pynode.Messages.tool_returns([
      ...>   %{"kind" => "request", "parts" => [
      ...>     %{"part_kind" => "tool-return", "tool_name" => "stock", "content" => %{"count" => 42}, "tool_call_id" => "c1", "outcome" => "success"}
      ...>   ]}
      ...> ])
      [%{name: "stock", content: %{"count" => 42}, call_id: "c1", outcome: "success"}]
  """
  @spec tool_returns(messages()) :: [tool_return()]
  def tool_returns(messages) do
    for %{"kind" => "request", "parts" => parts} <- decode!(messages),
        %{"part_kind" => kind} = part <- parts,
        kind == "tool-return" or (kind == "retry-prompt" and is_binary(part["tool_name"])) do
      outcome = if kind == "tool-return", do: part["outcome"] || "success", else: "retried"

      %{
        name: part["tool_name"],
        content: part["content"],
        call_id: part["tool_call_id"],
        outcome: outcome
      }
    end
  end

  @doc """
  The text of the last model response that has text, or `nil` when none has.

  Its text parts are joined as pydantic-ai joins them: adjacent parts run together, and parts
  with something else between them (a tool call) are separated by a blank line. Thinking is
  left out.

      iex> Pynode.Messages.last_text([
      ...>   %{"kind" => "response", "parts" => [%{"part_kind" => "text", "content" => "First"}]},
      ...>   %{"kind" => "response", "parts" => [
      ...>     %{"part_kind" => "thinking", "content" => "Hm."},
      ...>     %{"part_kind" => "text", "content" => "42 "},
      ...>     %{"part_kind" => "text", "content" => "bolts"}
      ...>   ]},
      ...>   %{"kind" => "response", "parts" => [%{"part_kind" => "tool-call", "tool_name" => "log", "args" => %{}, "tool_call_id" => "c1"}]}
      ...> ])
      "42 bolts"

      iex> Pynode.Messages.last_text([])
      nil
  """
  @spec last_text(messages()) :: String.t() | nil
  def last_text(messages) do
    messages
    |> decode!()
    |> Enum.reverse()
    |> Enum.find_value(fn
      %{"kind" => "response", "parts" => parts} -> text(parts)
      _request -> nil
    end)
  end

  defp text(parts) do
    groups =
      parts
      |> Enum.chunk_by(&match?(%{"part_kind" => "text"}, &1))
      |> Enum.filter(&match?([%{"part_kind" => "text"} | _], &1))

    case groups do
      [] ->
        nil

      groups ->
        Enum.map_join(groups, "\n\n", fn group -> Enum.map_join(group, & &1["content"]) end)
    end
  end

  @doc """
  The last `n` turns of a conversation, as a list that can be passed back as `message_history:`.

  A turn starts at a request that carries a user prompt. A history with `n` turns or fewer is
  returned whole; `n = 0` gives `[]`, no history.

  What is kept stays a valid history:

    * it begins with the request of a user prompt, never with a response or a tool's answer
    * a tool's answer (a `"tool-return"` or retry prompt) whose call was cut off is dropped,
      such as the answers that the kept first request gives to the response before it (a run
      continuing after a tool call was approved); as is a retry feedback in that request, which
      was about a response that is gone

  The system prompt is kept: pydantic-ai writes the system prompt parts into the first request of
  a conversation only, and takes a history as it is without adding them again, so cutting the
  first turn would lose it. The system prompt parts of the original first request (except those
  with `"scope" => "request"`, which were meant for that request only) are put at the start of
  the kept first request, unless that request already has the same prompt. Pass
  `system_prompt: false` to leave them out. An agent's `instructions` are not in the history: it
  adds them to every run anyway.

  ## Options

    * `:system_prompt` - carry the system prompt over to the kept first request (default `true`)

  ## Examples

      iex> system = %{"part_kind" => "system-prompt", "content" => "Be brief."}
      iex> ask = fn text -> %{"kind" => "request", "parts" => [%{"part_kind" => "user-prompt", "content" => text}]} end
      iex> say = fn text -> %{"kind" => "response", "parts" => [%{"part_kind" => "text", "content" => text}]} end
      iex> first = %{"kind" => "request", "parts" => [system, %{"part_kind" => "user-prompt", "content" => "Hi"}]}
      iex> history = [first, say.("Hello"), ask.("Bolts?"), say.("42"), ask.("Nuts?"), say.("7")]
      iex> [kept | rest] = Pynode.Messages.keep_last(history, 2)
      iex> kept["parts"]
      [%{"part_kind" => "system-prompt", "content" => "Be brief."}, %{"part_kind" => "user-prompt", "content" => "Bolts?"}]
      iex> rest == [say.("42"), ask.("Nuts?"), say.("7")]
      true
      iex> Pynode.Messages.keep_last(history, 1, system_prompt: false)
      [ask.("Nuts?"), say.("7")]
  """
  @spec keep_last(messages(), non_neg_integer(), keyword()) :: [message()]
  def keep_last(messages, n, opts \\ []) when is_integer(n) and n >= 0 and is_list(opts) do
    system_prompt? = Keyword.get(opts, :system_prompt, true)

    unless is_boolean(system_prompt?),
      do: raise(ArgumentError, "keep_last/3: :system_prompt must be a boolean")

    messages = decode!(messages)

    starts =
      for {%{"kind" => "request", "parts" => parts}, index} <- Enum.with_index(messages),
          Enum.any?(parts, &match?(%{"part_kind" => "user-prompt"}, &1)),
          do: index

    cond do
      n == 0 -> []
      n >= length(starts) -> messages
      true -> cut(messages, Enum.at(starts, -n), system_prompt?)
    end
  end

  defp cut(messages, at, system_prompt?) do
    [first | rest] = Enum.drop(messages, at)
    carried = if system_prompt?, do: system_prompts(hd(messages)), else: []
    first = %{first | "parts" => carry(carried, Enum.reject(first["parts"], &answer?/1))}
    kept = [first | rest]

    calls =
      MapSet.new(
        for %{"kind" => "response", "parts" => parts} <- kept,
            %{"part_kind" => "tool-call", "tool_call_id" => id} <- parts,
            do: id
      )

    Enum.flat_map(kept, fn
      %{"kind" => "request", "parts" => parts} = request ->
        case Enum.reject(parts, &orphan?(&1, calls)) do
          [] -> []
          parts -> [%{request | "parts" => parts}]
        end

      response ->
        [response]
    end)
  end

  defp system_prompts(%{"kind" => "request", "parts" => parts}),
    do:
      Enum.filter(
        parts,
        &(match?(%{"part_kind" => "system-prompt"}, &1) and &1["scope"] != "request")
      )

  defp system_prompts(_response), do: []

  defp carry(carried, parts) do
    present = for %{"part_kind" => "system-prompt", "content" => content} <- parts, do: content
    Enum.reject(carried, &(&1["content"] in present)) ++ parts
  end

  defp answer?(%{"part_kind" => kind}), do: kind in @answers

  # A tool's answer to a call that is not in the kept messages. (A retry prompt without a tool
  # name is about the response before it, not a call.)
  defp orphan?(%{"part_kind" => "tool-return", "tool_call_id" => id}, calls),
    do: not MapSet.member?(calls, id)

  defp orphan?(%{"part_kind" => "retry-prompt", "tool_name" => name, "tool_call_id" => id}, calls)
       when is_binary(name),
       do: not MapSet.member?(calls, id)

  defp orphan?(_part, _calls), do: false

  defp check(messages) when is_list(messages) do
    messages
    |> Enum.with_index()
    |> Enum.find_value({:ok, messages}, fn {message, index} ->
      case message_problem(message) do
        nil -> nil
        problem -> {:error, "message #{index} #{problem}"}
      end
    end)
  end

  defp check(other), do: {:error, "messages must be a list, got #{describe(other)}"}

  defp message_problem(%{"kind" => kind} = message) when kind in ["request", "response"] do
    case message do
      %{"parts" => parts} when is_list(parts) ->
        case Enum.find_index(parts, &(not part?(&1))) do
          nil -> nil
          index -> "has a part #{index} that is not a map with a \"part_kind\""
        end

      %{"parts" => parts} ->
        "has parts that are not a list: #{describe(parts)}"

      _ ->
        "has no \"parts\""
    end
  end

  defp message_problem(%{"kind" => kind}),
    do: "is neither a request nor a response: its kind is #{describe(kind)}"

  defp message_problem(message) when is_map(message), do: "has no \"kind\""
  defp message_problem(other), do: "is not a map: #{describe(other)}"

  defp part?(%{"part_kind" => kind}), do: is_binary(kind)
  defp part?(_), do: false

  defp describe(value) when is_map(value), do: "a map"
  defp describe(value), do: inspect(value, limit: 5, printable_limit: 40)
end
