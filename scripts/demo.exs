# The BEAM side of the demo: an Elixir node that uses pydantic-ai agents living on py@127.0.0.1.
# Run by scripts/demo (which starts epmd and the Python node first).

defmodule Demo.Weather do
  @moduledoc "An agent tool written in Elixir: the Python node calls it on this node, as erpc would."
  def forecast(%{"city" => city}) do
    IO.puts("(Elixir tool) forecast requested for #{city}")
    %{"city" => city, "sky" => "clear", "high_c" => 21, "low_c" => 12}
  end
end

defmodule Demo.InventoryServer do
  @moduledoc "The GenServer that the Python `inventory` agent asks, on whichever node starts the run."
  use GenServer
  def start, do: GenServer.start(__MODULE__, %{"bolts" => 120, "nuts" => 0}, name: :inventory_server)
  @impl true
  def init(stock), do: {:ok, stock}
  @impl true
  def handle_call({:stock, item}, _from, stock), do: {:reply, {:ok, Map.get(stock, item, 7)}, stock}
end

defmodule Demo do
  @py :"py@127.0.0.1"
  @model System.get_env("DEMO_MODEL", "test")

  def show(label, value), do: IO.puts(String.pad_trailing(label, 28) <> inspect(value, pretty: true, width: 100))

  def run do
    IO.puts("\n== The node")
    show("Node.ping", Node.ping(@py))
    show("registry ping", GenServer.call({:pynode, @py}, :ping))
    show("registry info", GenServer.call({:pynode, @py}, :info))
    show("hidden node?", {@py in Node.list(:hidden), @py in Node.list()})
    show("echo keeps terms exact", GenServer.call({:pynode, @py}, {:echo, {self(), %{1 => :a, 1.0 => "b"}}}))

    IO.puts("\n== An agent created from Elixir, with an Elixir tool and an output schema (model #{@model})")

    spec = %{
      model: @model,
      instructions: "You are a weather assistant. Use the forecast tool, then report.",
      tools: [
        %{
          name: "forecast",
          description: "Tomorrow's forecast for a city",
          parameters: %{
            "type" => "object",
            "properties" => %{"city" => %{"type" => "string"}},
            "required" => ["city"]
          },
          handler: {Demo.Weather, :forecast}
        }
      ],
      output_schema: %{
        "type" => "object",
        "properties" => %{
          "city" => %{"type" => "string"},
          "summary" => %{"type" => "string"},
          "high_c" => %{"type" => "integer"}
        },
        "required" => ["city", "summary", "high_c"]
      }
    }

    show("create_agent", GenServer.call({:pynode, @py}, {:create_agent, :weather, spec}))
    {:ok, result} = GenServer.call({:weather, @py}, {:run, "What will the weather be in Lisbon?", %{}}, 60_000)
    show("output", result.output)
    show("usage", result.usage)
    show("agent info", GenServer.call({:weather, @py}, :info))

    IO.puts("\n== Streaming runs (start_run: events as they happen, then the result)")
    {:ok, ref} = GenServer.call({:weather, @py}, {:start_run, "And in Porto?", %{}})
    stream(ref)
    GenServer.call({:pynode, @py}, {:create_agent, :chat, %{model: @model, instructions: "Answer in one sentence."}})
    {:ok, ref} = GenServer.call({:chat, @py}, {:start_run, "Say hello to the BEAM.", %{}})
    stream(ref)

    IO.puts("\n== A streamed run through a provider's HTTP API (the scripted OpenAI server, offline)")
    url = System.fetch_env!("DEMO_PROVIDER_URL")
    provider = %{provider: :openai, name: "gpt-4o-mini", base_url: url <> "/v1", api_key: "sk-demo-not-a-real-key"}
    show("model (a run's own)", Map.put(provider, :api_key, "(never shown by the node)"))
    {:ok, ref} = GenServer.call({:chat, @py}, {:start_run, "Say hello to the BEAM.", %{model: provider}})
    stream(ref)

    IO.puts("\n== The Python-defined research agent (agents/research.py)")

    {:ok, research} =
      GenServer.call({:research, @py}, {:run, "How do supervisors restart children?", %{deps: %{max_results: 2}}}, 60_000)

    show("output", research.output)

    IO.puts("\n== A Python agent whose tool calls back into this Elixir node (agents/inventory.py)")
    {:ok, _} = Demo.InventoryServer.start()
    {:ok, inventory} = GenServer.call({:inventory, @py}, {:run, "How many bolts do we have?", %{}}, 60_000)
    show("output", inventory.output)

    IO.puts("\n== Errors are values")
    show("unknown model", GenServer.call({:pynode, @py}, {:create_agent, :nope, %{model: "nosuch:model"}}))
    missing =
      try do
        GenServer.call({:no_such_agent, @py}, {:run, "hi"}, 5_000)
      catch
        :exit, {reason, _call} -> {:exit, reason}
      end

    show("missing agent", missing)
    show("list_agents", GenServer.call({:pynode, @py}, :list_agents))
  end

  defp stream(ref) do
    receive do
      {:pynode_event, ^ref, event} ->
        show("  event", event)
        stream(ref)

      {:pynode_result, ^ref, {:ok, result}} ->
        show("  result", result.output)

      {:pynode_result, ^ref, error} ->
        show("  result", error)
    after
      60_000 -> IO.puts("  (no result within 60 s)")
    end
  end
end

try do
  Demo.run()
  IO.puts("\nDemo finished.")
rescue
  error ->
    IO.puts("demo failed: " <> Exception.format(:error, error, __STACKTRACE__))
    System.halt(1)
catch
  kind, reason ->
    IO.puts("demo failed: #{inspect(kind)} #{inspect(reason)}")
    System.halt(1)
end
