defmodule Pynode.TestKitTest do
  # The test kit as a user's suite meets it: Pynode.Case starts this module's node, and scripted
  # models (Pynode.Test) decide what the model says.
  use Pynode.Case, async: true, start: [cmd: Pynode.TestSupport.pynode_cmd()]

  import ExUnit.CaptureIO
  alias Pynode.{Error, Result, Tool}

  defmodule ShopTools do
    def stock(%{"sku" => sku}, ctx),
      do: %{"sku" => sku, "count" => 3, "user" => ctx.deps["user"], "agent" => ctx.agent}
  end

  setup %{pynode: py, test: test} do
    name = :"kit_#{:erlang.phash2(test)}"

    start_supervised!(
      {Pynode.Agent,
       pynode: py,
       name: name,
       spec: %{model: "test"},
       tools: [Tool.new(name: "stock", parameters: [sku: :string], fun: &ShopTools.stock/2)]}
    )

    :ok = Pynode.Agent.await_ready(name, pynode: py, timeout: 30_000)
    %{agent: name}
  end

  test "Pynode.Case gives each module its own node", %{pynode: py, pynode_node: node} do
    assert Pynode.node_name(py) == node
    assert node in Node.list(:hidden)
    assert Atom.to_string(node) =~ ~r/_case\d+@/
  end

  test "a scripted tool call reaches an agent's {M, F}/2 tool with the run's context, then text",
       %{agent: agent, pynode: py} do
    script = script([tool_call("stock", %{sku: "A1"}), text("3 left")])

    assert {:ok, %Result{output: "3 left"}} =
             Pynode.run(agent, "A1?", pynode: py, model: script, deps: %{user: "ada"})

    assert [first, second] = requests(script)
    assert [%{name: "stock", parameters: %{"properties" => %{"sku" => _}}}] = first.info.tools
    assert first.info.text_output == true and first.info.output_schema == nil
    assert [%{"kind" => "request", "parts" => [%{"content" => "A1?"} | _]}] = first.messages

    [returned] =
      for %{"parts" => parts} <- second.messages,
          %{"part_kind" => "tool-return"} = part <- parts,
          do: part

    assert returned["content"] == %{
             "sku" => "A1",
             "count" => 3,
             "user" => "ada",
             "agent" => Atom.to_string(agent)
           }

    assert turns_left(script) == 0
  end

  test "run tools served here, structured output, and a turn given as a function",
       %{agent: agent, pynode: py} do
    me = self()

    basket =
      Tool.new(
        name: "basket",
        parameters: [],
        fun: fn _args ->
          send(me, :basket_called)
          %{"items" => 2}
        end
      )

    count_messages = fn messages, _info -> output(%{total: length(messages)}) end
    script = script([tool_call("basket", %{}), count_messages])

    assert {:ok, %Result{output: %{"total" => 3}}} =
             Pynode.run(agent, "how many?",
               pynode: py,
               model: script,
               tools: [basket],
               output: [total: [type: :integer, required: true]]
             )

    assert_received :basket_called
    [_, second] = requests(script)
    assert %{"properties" => %{"total" => _}} = second.info.output_schema
    assert second.info.text_output == false
  end

  test "a streamed run sends the scripted chunks as they are", %{agent: agent, pynode: py} do
    script = script([text(["Hel", "lo ", "there"])])
    events = agent |> Pynode.stream("hi", pynode: py, model: script) |> Enum.to_list()
    assert for({:text_delta, t} <- events, do: t) == ["Hel", "lo ", "there"]
    assert {:done, %Result{output: "Hello there"}} = List.last(events)
  end

  test "a run past the end of its script fails with model_error", %{agent: agent, pynode: py} do
    script = script([text("only one")])
    assert {:ok, _} = Pynode.run(agent, "one", pynode: py, model: script)

    assert {:error, %Error{kind: :model_error, message: message}} =
             Pynode.run(agent, "two", pynode: py, model: script)

    assert message =~ "the script has no turn 2: it was given 1"
  end

  test "an agent's scripted model is given in its spec", %{pynode: py} do
    script = script([text("from the spec")])

    start_supervised!(
      {Pynode.Agent, pynode: py, name: :kit_spec_model, spec: %{model: script}},
      id: :spec_model
    )

    :ok = Pynode.Agent.await_ready(:kit_spec_model, pynode: py, timeout: 30_000)
    assert {:ok, %Result{output: "from the spec"}} = Pynode.run(:kit_spec_model, "hi", pynode: py)
    assert {:ok, agents} = Pynode.list_agents(py)
    assert %{model: "function"} = Enum.find(agents, &(&1.name == :kit_spec_model))
  end

  test "a closure as an agent's tool is refused when the child spec is built" do
    closure = Tool.new(name: "lookup", fun: fn args -> args end)

    error =
      assert_raise ArgumentError, fn ->
        Pynode.Agent.child_spec(
          pynode: :any,
          name: :kit_closure,
          spec: %{model: "test"},
          tools: [closure]
        )
      end

    assert error.message =~ ~s(tool "lookup" of Pynode.Agent is #Function<)
  end

  test ":output_schema is deprecated in favour of :output", %{agent: agent, pynode: py} do
    script = script([output(%{n: 1})])
    schema = %{"type" => "object", "properties" => %{"n" => %{"type" => "integer"}}}

    warning =
      capture_io(:stderr, fn ->
        assert {:ok, %Result{output: %{"n" => 1}}} =
                 Pynode.run(agent, "n?", pynode: py, model: script, output_schema: schema)
      end)

    assert warning =~ "the run option :output_schema is deprecated: use :output"
  end
end
