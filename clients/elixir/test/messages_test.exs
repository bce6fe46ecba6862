defmodule Pynode.MessagesTest do
  # Real pydantic-ai histories, written by test/fixtures/messages/generate.py.
  use ExUnit.Case, async: true

  doctest Pynode.Messages

  alias Pynode.{Messages, Result}

  @fixtures Path.expand("fixtures/messages", __DIR__)
  @names ~w(tool_run conversation deferred retry output_tool)

  defp fixture(name), do: File.read!(Path.join(@fixtures, name <> ".json"))

  defp kinds(messages) do
    for %{"kind" => kind, "parts" => parts} <- messages,
        do: {kind, Enum.map(parts, & &1["part_kind"])}
  end

  defp prompts(%{"parts" => parts}, kind),
    do: for(%{"part_kind" => ^kind, "content" => content} <- parts, do: content)

  # What a run accepts as message_history: it starts with a user prompt's request, and every
  # tool return answers a call made before it.
  defp assert_valid_history([]), do: :ok

  defp assert_valid_history([first | _] = messages) do
    assert %{"kind" => "request"} = first
    assert prompts(first, "user-prompt") != []

    Enum.reduce(messages, MapSet.new(), fn
      %{"kind" => "response", "parts" => parts}, calls ->
        Enum.reduce(parts, calls, fn
          %{"part_kind" => "tool-call", "tool_call_id" => id}, calls -> MapSet.put(calls, id)
          _, calls -> calls
        end)

      %{"kind" => "request", "parts" => parts}, calls ->
        for %{"part_kind" => "tool-return", "tool_call_id" => id} <- parts,
            do: assert(id in calls, "the return of #{id} has no call before it")

        calls
    end)
  end

  describe "decode/1" do
    test "the JSON of every sample, the same list given as terms, and a result" do
      for name <- @names do
        json = fixture(name)
        assert {:ok, [%{"kind" => "request"} | _] = messages} = Messages.decode(json)
        assert Messages.decode(messages) == {:ok, messages}
        assert Messages.decode(%Result{messages: json}) == {:ok, messages}
        assert Messages.decode(%Result{messages: messages}) == {:ok, messages}
        assert Messages.decode!(json) == messages
      end
    end

    test "the samples' shapes, as pydantic-ai writes them" do
      assert kinds(Messages.decode!(fixture("tool_run"))) == [
               {"request", ["system-prompt", "user-prompt"]},
               {"response", ["tool-call"]},
               {"request", ["tool-return"]},
               {"response", ["text"]}
             ]

      [request, response | _] = Messages.decode!(fixture("tool_run"))

      assert %{"content" => "You are a stock clerk.", "scope" => "conversation"} =
               hd(request["parts"])

      assert is_binary(request["timestamp"]) and is_binary(request["run_id"])
      assert %{"model_name" => "test", "usage" => %{"input_tokens" => n}} = response
      assert is_integer(n)
    end

    test "what is not a message list is an error that says why" do
      for {messages, reason} <- [
            {"[1,", "messages are not valid JSON: expected a value at byte 3 (end of input)"},
            {~s({"kind": "request"}), "messages must be a list, got a map"},
            {"\"text\"", ~s(messages must be a list, got "text")},
            {nil, "messages must be a list, got nil"},
            {[1], "message 0 is not a map: 1"},
            {[%{}], ~s(message 0 has no "kind")},
            {[%{"kind" => "note", "parts" => []}],
             ~s(message 0 is neither a request nor a response: its kind is "note")},
            {[%{"kind" => "request"}], ~s(message 0 has no "parts")},
            {[%{"kind" => "request", "parts" => []}, %{"kind" => "response", "parts" => %{}}],
             "message 1 has parts that are not a list: a map"},
            {[
               %{"kind" => "response", "parts" => [%{"part_kind" => "text"}, %{"content" => "x"}]}
             ], ~s(message 0 has a part 1 that is not a map with a "part_kind")},
            {%Result{messages: nil}, "messages must be a list, got nil"}
          ] do
        assert Messages.decode(messages) == {:error, reason}
        assert_raise ArgumentError, reason, fn -> Messages.decode!(messages) end
      end

      assert_raise ArgumentError, fn -> Messages.tool_calls("[") end
      assert_raise ArgumentError, fn -> Messages.keep_last(%{}, 1) end
    end
  end

  describe "tool_calls/1 and tool_returns/1" do
    test "a TestModel run" do
      assert Messages.tool_calls(fixture("tool_run")) == [
               %{name: "stock", args: %{"item" => "a"}, call_id: "pyd_ai_tool_call_id__stock"}
             ]

      assert Messages.tool_returns(fixture("tool_run")) == [
               %{
                 name: "stock",
                 content: %{"item" => "a", "count" => 42},
                 call_id: "pyd_ai_tool_call_id__stock",
                 outcome: "success"
               }
             ]
    end

    test "in order over a conversation; args given as a JSON string are decoded" do
      messages = Messages.decode!(fixture("conversation"))
      # The first call's args are a JSON string in the history, the others maps.
      assert Enum.at(messages, 1)["parts"] |> hd() |> Map.get("args") == ~s({"item": "bolts"})

      assert Messages.tool_calls(messages) == [
               %{name: "stock", args: %{"item" => "bolts"}, call_id: "call-1"},
               %{name: "stock", args: %{"item" => "nuts"}, call_id: "call-2"},
               %{name: "price", args: %{"item" => "nuts", "currency" => "€"}, call_id: "call-3"},
               %{name: "log", args: %{}, call_id: "call-4"}
             ]

      assert [
               %{call_id: "call-1", content: %{"count" => 42}},
               %{call_id: "call-2"},
               %{name: "price", call_id: "call-3", content: 0.25},
               %{name: "log", call_id: "call-4", content: nil, outcome: "success"}
             ] = Messages.tool_returns(messages)
    end

    test "args that are not a JSON object are left as the model wrote them" do
      call = fn args ->
        [
          %{
            "kind" => "response",
            "parts" => [
              %{
                "part_kind" => "tool-call",
                "tool_name" => "t",
                "args" => args,
                "tool_call_id" => "c"
              }
            ]
          }
        ]
      end

      assert [%{args: %{}}] = Messages.tool_calls(call.(nil))
      assert [%{args: %{}}] = Messages.tool_calls(call.(""))
      assert [%{args: ~s({"a": )}] = Messages.tool_calls(call.(~s({"a": )))
      assert [%{args: "[1, 2]"}] = Messages.tool_calls(call.("[1, 2]"))
    end

    test "a retried call, an output tool, a call approved in a later run" do
      assert [%{name: "flaky"}, %{name: "flaky"}] = Messages.tool_calls(fixture("retry"))

      assert [
               %{name: "flaky", content: "try again", outcome: "retried"},
               %{name: "flaky", content: "ok", outcome: "success"}
             ] = Messages.tool_returns(fixture("retry"))

      assert [%{name: "final_result", args: %{"city" => _, "population" => _}}] =
               Messages.tool_calls(fixture("output_tool"))

      assert [%{name: "delete", call_id: id}] = Messages.tool_calls(fixture("deferred"))

      assert [%{name: "delete", call_id: ^id, content: "deleted a"}] =
               Messages.tool_returns(fixture("deferred"))
    end

    test "a retry prompt of an older history is a retried return" do
      messages = [
        %{
          "kind" => "request",
          "parts" => [
            %{
              "part_kind" => "retry-prompt",
              "tool_name" => "t",
              "content" => "again",
              "tool_call_id" => "c"
            },
            %{
              "part_kind" => "retry-prompt",
              "tool_name" => nil,
              "content" => "no tool",
              "tool_call_id" => "d"
            }
          ]
        }
      ]

      assert Messages.tool_returns(messages) == [
               %{name: "t", content: "again", call_id: "c", outcome: "retried"}
             ]
    end
  end

  describe "last_text/1" do
    test "the last response with text" do
      assert Messages.last_text(fixture("tool_run")) == ~s({"stock":{"item":"a","count":42}})
      assert Messages.last_text(fixture("deferred")) == ~s({"delete":"deleted a"})
      # Adjacent text parts run together; thinking is left out.
      assert Messages.last_text(fixture("conversation")) == "In short: 42 of each."
    end

    test "text parts with a tool call between them are separated by a blank line" do
      messages = fixture("conversation") |> Messages.decode!() |> Enum.take(8)
      assert Messages.last_text(messages) == "42 nuts\n\nat 0.25 € each."
      assert Messages.last_text(Enum.take(messages, 6)) == "Let me check both."
    end

    test "nil when no response has text" do
      assert Messages.last_text(fixture("output_tool")) == nil
      assert Messages.last_text(fixture("tool_run") |> Messages.decode!() |> Enum.take(3)) == nil
      assert Messages.last_text([]) == nil
    end
  end

  describe "keep_last/3" do
    test "the last turns of a conversation, the system prompt carried over" do
      messages = Messages.decode!(fixture("conversation"))
      assert length(messages) == 12

      one = Messages.keep_last(messages, 1)

      assert kinds(one) == [
               {"request", ["system-prompt", "system-prompt", "user-prompt"]},
               {"response", ["thinking", "text", "text"]}
             ]

      assert prompts(hd(one), "system-prompt") == ["You are a stock clerk.", "Answer briefly."]
      assert prompts(hd(one), "user-prompt") == ["Summary?"]
      # The carried parts are the original ones, the rest is untouched.
      assert Enum.take(hd(one)["parts"], 2) == Enum.take(hd(messages)["parts"], 2)
      assert tl(one) == Enum.drop(messages, 11)
      assert Map.delete(hd(one), "parts") == Map.delete(Enum.at(messages, 10), "parts")

      two = Messages.keep_last(messages, 2)
      assert length(two) == 8
      assert prompts(hd(two), "user-prompt") == ["And nuts, at what price?"]
      assert tl(two) == Enum.drop(messages, 5)

      for n <- [3, 4, 100], do: assert(Messages.keep_last(messages, n) == messages)
      assert Messages.keep_last(messages, 0) == []
    end

    test "system_prompt: false leaves the system prompt with the dropped turns" do
      messages = Messages.decode!(fixture("conversation"))
      assert Messages.keep_last(messages, 1, system_prompt: false) == Enum.drop(messages, 10)
      assert_raise ArgumentError, fn -> Messages.keep_last(messages, 1, system_prompt: :yes) end
      assert_raise FunctionClauseError, fn -> Messages.keep_last(messages, -1) end
    end

    test "a tool's return whose call is cut off is dropped" do
      # The second run's first request answers the approved call of the first run's response.
      messages = Messages.decode!(fixture("deferred"))

      assert kinds(Enum.drop(messages, 2)) == [
               {"request", ["tool-return", "user-prompt"]},
               {"response", ["text"]}
             ]

      kept = Messages.keep_last(messages, 1)

      assert kinds(kept) == [
               {"request", ["system-prompt", "user-prompt"]},
               {"response", ["text"]}
             ]

      assert prompts(hd(kept), "user-prompt") == ["Go on"]
      assert_valid_history(kept)
    end

    test "retry feedback about a dropped response goes with it; a scope: request prompt stays behind" do
      system = fn content, scope ->
        %{"part_kind" => "system-prompt", "content" => content, "scope" => scope}
      end

      ask = fn parts -> %{"kind" => "request", "parts" => parts} end
      user = fn text -> %{"part_kind" => "user-prompt", "content" => text} end
      say = %{"kind" => "response", "parts" => [%{"part_kind" => "text", "content" => "ok"}]}

      messages = [
        ask.([system.("Always", "conversation"), system.("Budget: 3", "request"), user.("One")]),
        say,
        ask.([
          %{"part_kind" => "retry-feedback", "content" => "Try again", "retry" => %{}},
          user.("Two")
        ]),
        say
      ]

      assert [first, ^say] = Messages.keep_last(messages, 1)
      assert first["parts"] == [system.("Always", "conversation"), user.("Two")]
    end

    test "the same prompt is not carried twice" do
      system = %{"part_kind" => "system-prompt", "content" => "Always"}

      ask = fn text ->
        %{
          "kind" => "request",
          "parts" => [system, %{"part_kind" => "user-prompt", "content" => text}]
        }
      end

      say = %{"kind" => "response", "parts" => [%{"part_kind" => "text", "content" => "ok"}]}

      assert [first, ^say] = Messages.keep_last([ask.("One"), say, ask.("Two"), say], 1)
      assert first == ask.("Two")
    end

    test "every sample cut at every length is a valid history, in both forms" do
      for name <- @names, n <- 0..4 do
        json = fixture(name)
        kept = Messages.keep_last(json, n)
        assert kept == Messages.keep_last(Messages.decode!(json), n)
        assert kept == Messages.keep_last(%Result{messages: json}, n)
        assert_valid_history(kept)
        # Cutting again keeps what is there.
        assert Messages.keep_last(kept, n) == kept
      end
    end

    test "a history that already begins with a response" do
      messages = Messages.decode!(fixture("conversation")) |> Enum.drop(3)
      assert Messages.keep_last(messages, 2) == messages
      # The first message is a response, not a request: no system prompt to carry.
      assert Messages.keep_last(messages, 1) == Enum.drop(messages, 7)
    end
  end
end

defmodule Pynode.MessagesNodeTest do
  # The messages of real runs on a real node, in both forms, and a trimmed history sent back.
  use ExUnit.Case, async: false

  import Pynode.TestSupport
  alias Pynode.{Messages, Result, Tool}

  defmodule Tools do
    def stock(%{"item" => item}), do: %{"item" => item, "count" => 42}
  end

  setup_all do
    start_supervised!(
      {Pynode, name: MessagesTest.Py, node: unique_node("messages"), start: start_opts()}
    )

    start_supervised!(
      {Pynode.Agent,
       pynode: MessagesTest.Py,
       name: :messages_clerk,
       spec: %{model: "test", system_prompt: "You count stock."},
       tools: [
         Tool.new(
           name: "stock",
           parameters: [item: [type: :string, required: true]],
           fun: &Tools.stock/1
         )
       ]}
    )

    :ok = Pynode.await_ready(MessagesTest.Py, 60_000)
    :ok = Pynode.Agent.await_ready(:messages_clerk, 60_000)
    :ok
  end

  defp system_prompts(%{"parts" => parts}),
    do: for(%{"part_kind" => "system-prompt", "content" => content} <- parts, do: content)

  test "JSON and terms, tool calls and text, and keep_last's history continued by the node" do
    # The first run: JSON messages.
    assert {:ok, %Result{messages: json} = first} = Pynode.run(:messages_clerk, "How many bolts?")
    assert is_binary(json)
    assert {:ok, messages} = Messages.decode(first)
    assert [%{name: "stock", args: %{"item" => item}, call_id: id}] = Messages.tool_calls(first)
    assert is_binary(item) and is_binary(id)

    assert [%{name: "stock", call_id: ^id, content: %{"count" => 42}}] =
             Messages.tool_returns(first)

    assert Messages.last_text(first) == first.output
    assert first.output =~ "42"
    assert system_prompts(hd(messages)) == ["You count stock."]

    # The second run continues it and gives terms; its history is the first run's messages as
    # the node wrote them, so they equal what this module decoded from the JSON.
    assert {:ok, %Result{messages: terms} = second} =
             Pynode.run(:messages_clerk, "And nuts?", message_history: json, messages_as: :terms)

    assert is_list(terms)
    assert Messages.decode(second) == {:ok, terms}
    assert Enum.take(terms, length(messages)) == messages
    assert Messages.decode!(second.new_messages) == Enum.drop(terms, length(messages))
    assert Messages.tool_calls(second) == Messages.tool_calls(first)
    assert Messages.last_text(second) == second.output

    # The last turn only: the node takes it, with the system prompt carried over.
    kept = Messages.keep_last(second, 1)
    assert length(kept) == length(terms) - length(messages)
    assert system_prompts(hd(kept)) == ["You count stock."]

    assert {:ok, third} =
             Pynode.run(:messages_clerk, "And screws?", message_history: kept, messages_as: :terms)

    assert Enum.take(third.messages, length(kept)) == kept
    assert Messages.keep_last(third, 2) == third.messages
    assert Messages.tool_calls(third) == []
    assert Messages.last_text(third) == third.output

    # Without it, pydantic-ai adds no system prompt to a history that has none.
    bare = Messages.keep_last(second, 1, system_prompt: false)
    assert {:ok, fourth} = Pynode.run(:messages_clerk, "And washers?", message_history: bare)
    assert Enum.flat_map(Messages.decode!(fourth), &system_prompts/1) == []
  end
end
