defmodule Pynode.PureTest do
  use ExUnit.Case, async: true

  doctest Pynode.Schema
  doctest Pynode.Error

  alias Pynode.{Error, Schema, Tool, ToolServer}

  describe "Schema.to_json_schema/1" do
    test "nested maps, lists of maps, defaults and every scalar type" do
      schema =
        Schema.to_json_schema(
          name: [type: :string, required: true],
          age: :integer,
          score: [type: :number, default: 0.5],
          active: :boolean,
          extra: :map,
          address: [type: {:map, street: [type: :string, required: true]}, doc: "Where"],
          tags: {:list, {:map, label: :string}}
        )

      assert schema["required"] == ["name"]
      assert schema["properties"]["age"] == %{"type" => "integer"}
      assert schema["properties"]["score"] == %{"type" => "number", "default" => 0.5}
      assert schema["properties"]["active"] == %{"type" => "boolean"}
      assert schema["properties"]["extra"] == %{"type" => "object"}

      assert schema["properties"]["address"] == %{
               "type" => "object",
               "description" => "Where",
               "properties" => %{"street" => %{"type" => "string"}},
               "required" => ["street"],
               "additionalProperties" => false
             }

      assert schema["properties"]["tags"]["items"]["properties"] == %{
               "label" => %{"type" => "string"}
             }
    end

    test "enums of mixed values have no single type" do
      assert Schema.to_json_schema(x: {:enum, [1, "a"]})["properties"]["x"] == %{
               "enum" => [1, "a"]
             }
    end

    test "a field it does not understand is an ArgumentError that names it" do
      assert_raise ArgumentError, ~r/field :when: unknown type :date/, fn ->
        Schema.to_json_schema(when: :date)
      end

      assert_raise ArgumentError, ~r/keyword spec/, fn -> Schema.to_json_schema("nope") end
    end
  end

  describe "Tool.new/1" do
    test "keeps the function and turns the parameters into JSON Schema" do
      tool = Tool.new(name: :weather, parameters: [city: :string], fun: &Map.keys/1)
      assert tool.name == "weather"
      assert tool.parameters["properties"] == %{"city" => %{"type" => "string"}}
      assert Tool.to_run_spec(tool) == %{name: "weather", parameters: tool.parameters}
    end

    test "an agent's tool is a {Module, :function} handler; a capture is turned into one" do
      tool = Tool.new(name: "keys", fun: &String.trim/1, description: "d")

      assert Tool.to_agent_spec(tool) == %{
               name: "keys",
               description: "d",
               handler: {String, :trim},
               parameters: tool.parameters
             }

      closure = Tool.new(name: "c", fun: fn args -> args end)
      assert_raise ArgumentError, ~r/Module, :function/, fn -> Tool.to_agent_spec(closure) end
    end

    test "refuses a tool without a function or handler" do
      assert_raise ArgumentError, ~r/give :fun/, fn -> Tool.new(name: "x") end
      assert_raise ArgumentError, fn -> Tool.new(name: "x", fun: & &1, colour: :red) end
    end
  end

  describe "what a tool function returns becomes a tool reply" do
    defp invoke(fun), do: ToolServer.invoke(Tool.new(name: "t", fun: fun), %{"a" => 1}, %{})

    test "values, ok/error/retry tuples, raises, throws and exits" do
      assert invoke(fn args -> args end) == {:ok, %{"a" => 1}}
      assert invoke(fn _ -> {:ok, 5} end) == {:ok, 5}
      assert invoke(fn _ -> {:error, "no"} end) == {:error, "no"}
      assert invoke(fn _ -> {:error, :closed} end) == {:error, ":closed"}
      assert invoke(fn _ -> {:retry, "again"} end) == {:retry, "again"}
      assert invoke(fn _ -> raise "boom" end) == {:error, "tool t raised RuntimeError: boom"}
      assert invoke(fn _ -> throw(:x) end) == {:error, "tool t failed: throw :x"}
      assert invoke(fn _ -> exit(:bye) end) == {:error, "tool t failed: exit :bye"}
    end
  end

  describe "Run.handle_info/2 when the node goes away" do
    defp fake_run do
      %Pynode.Run{
        ref: make_ref(),
        monitor: make_ref(),
        agent: {:agent, :"py@127.0.0.1"},
        deadline: 0,
        owner: self()
      }
    end

    test "a final result already in the mailbox wins over the DOWN" do
      run = fake_run()
      send(self(), {:pynode_result, run.ref, {:ok, %{output: "real", usage: %{}}}})
      down = {:DOWN, run.monitor, :process, {:agent, :"py@127.0.0.1"}, :noconnection}
      assert {:done, %Pynode.Result{output: "real"}} = Pynode.Run.handle_info(down, run)
      refute_received {:pynode_result, _, _}
    end

    test "without a result the run ends :nodedown, :unknown_agent or :cancelled" do
      for {reason, kind} <- [noconnection: :nodedown, noproc: :unknown_agent, killed: :cancelled] do
        run = fake_run()
        send(self(), {:pynode_event, run.ref, {:text_delta, "late"}})
        down = {:DOWN, run.monitor, :process, {:agent, :"py@127.0.0.1"}, reason}
        assert {:error, %Error{kind: ^kind}} = Pynode.Run.handle_info(down, run)
        refute_received {:pynode_event, _, _}
      end
    end

    test "messages of other runs are :unknown" do
      assert Pynode.Run.handle_info({:pynode_result, make_ref(), {:ok, %{}}}, fake_run()) ==
               :unknown
    end
  end

  test "every error kind has a message with its kind" do
    kinds =
      ~w(bad_request bad_spec unknown_agent already_exists model_unavailable model_http_error
         model_error unexpected_model_behavior usage_limit_exceeded tool_error timeout cancelled
         overloaded internal_error rate_limited auth_failed model_timeout draining nodedown)a

    for kind <- kinds do
      error = Error.from_reply({kind, "why"})
      assert Exception.message(error) == "#{kind}: why"
      assert_raise Error, "#{kind}: why", fn -> raise error end
    end

    assert Error.from_reply({:bad_request, ~c"chars"}).message == inspect(~c"chars")
  end
end
