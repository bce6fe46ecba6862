defmodule ShopTest do
  # One Python node for this module (Pynode.Case); the application starts none in test
  # (config :shop, start_pynode: false). Each test scripts what the model says.
  use Pynode.Case, async: true, start: [cmd: System.fetch_env!("PYNODE_CMD")]

  setup_all %{pynode: py} do
    start_supervised!(Shop.assistant(py))
    :ok = Pynode.Agent.await_ready(:shop_assistant, pynode: py)
  end

  test "the stock tool is called with the run's store", %{pynode: py} do
    script = script([tool_call("stock", %{sku: "A1"}), text("Porto has 1 A1.")])

    assert {:ok, "Porto has 1 A1."} =
             Shop.ask("Any A1 in Porto?", store: "porto", pynode: py, model: script)

    [first, second] = requests(script)
    assert [%{name: "stock"}] = first.info.tools
    assert first.info.instructions =~ "shop's assistant"

    assert [%{content: %{"sku" => "A1", "store" => "porto", "in_stock" => 1}}] =
             Pynode.Messages.tool_returns(second.messages)
  end

  test "a quote is structured output, priced by the run's own tool", %{pynode: py} do
    lines = [%{sku: "A1", qty: 2, subtotal: 19.0}]
    script = script([tool_call("price", %{sku: "A1"}), output(%{total: 19.0, lines: lines})])

    assert {:ok, %{"total" => 19.0, "lines" => [%{"sku" => "A1", "qty" => 2}]}} =
             Shop.quote([{"A1", 2}], pynode: py, model: script)

    [first, second] = requests(script)
    assert first.info.tools |> Enum.map(& &1.name) |> Enum.sort() == ["price", "stock"]
    assert %{"required" => ["total", "lines"]} = first.info.output_schema
    assert [%{name: "price", content: 9.5}] = Pynode.Messages.tool_returns(second.messages)
  end

  test "an answer streams as the model writes it", %{pynode: py} do
    me = self()
    script = script([text(["We ", "open ", "at 9."])])

    assert {:ok, "We open at 9."} =
             Shop.stream_answer("Hours?", &send(me, {:chunk, &1}), pynode: py, model: script)

    assert_received {:chunk, "We "}
    assert_received {:chunk, "open "}
    assert_received {:chunk, "at 9."}
  end

  test "a conversation keeps its last turns only", %{pynode: py} do
    script = script([text("Hello."), text("Yes, A1."), text("9.50 each.")])
    opts = [keep: 2, pynode: py, model: script]

    {:ok, _, history} = Shop.chat("Hi", [], opts)
    {:ok, _, history} = Shop.chat("Do you sell A1?", history, opts)
    {:ok, "9.50 each.", history} = Shop.chat("Price?", history, opts)

    prompts = fn messages ->
      for %{"parts" => parts} <- messages,
          %{"part_kind" => "user-prompt", "content" => text} <- parts,
          do: text
    end

    assert prompts.(List.last(requests(script)).messages) == ["Hi", "Do you sell A1?", "Price?"]
    assert prompts.(history) == ["Do you sell A1?", "Price?"]
  end

  test "a run past its timeout is cancelled", %{pynode: py} do
    slow = fn _messages, _info ->
      Process.sleep(1_000)
      text("Too late.")
    end

    assert {:error, %Pynode.Error{kind: :timeout}} =
             Shop.ask("Hi", timeout: 300, pynode: py, model: script([slow]))
  end

  test "the agent's own model (offline) answers too", %{pynode: py} do
    assert {:ok, answer} = Shop.ask("Any B2?", pynode: py)
    assert is_binary(answer)
  end
end
