# The Elixir library in use (run by scripts/demo with `mix run`): a supervision tree that starts
# the Python node and an agent, a run with an Elixir tool, a stream, a conversation kept as terms,
# and the node killed and brought back. Usage: mix run examples/demo.exs PYNODE_CMD AGENTS_DIR MODEL

[pynode_cmd, agents_dir, model] = System.argv()

defmodule Demo.Stock do
  @moduledoc "The agent's tool, on this node: the Python node calls it by name, as erpc would."
  def level(%{"item" => item}),
    do: %{"item" => item, "in_stock" => if(item == "bolts", do: 120, else: 0)}
end

defmodule Demo do
  def show(label, value),
    do: IO.puts(String.pad_trailing(label, 30) <> inspect(value, width: 100))
end

node = :"pydemo@127.0.0.1"

children = [
  {Pynode, name: Demo.Py, node: node, start: [cmd: pynode_cmd, args: ["--agents", agents_dir]]},
  {Pynode.Agent,
   pynode: Demo.Py,
   name: :clerk,
   spec: %{model: model, instructions: "You answer questions about stock. Use stock_level."},
   tools: [
     Pynode.Tool.new(
       name: "stock_level",
       description: "How many of an item are in stock",
       parameters: [item: [type: :string, required: true]],
       fun: &Demo.Stock.level/1
     )
   ]}
]

{:ok, _} = Supervisor.start_link(children, strategy: :rest_for_one)
:ok = Pynode.Agent.await_ready(:clerk, 60_000)
IO.puts("\n== The library started #{node} (OS pid #{Pynode.os_pid(Demo.Py)}) and created :clerk")
Demo.show("this node", node())

IO.puts("\n== Pynode.run with an agent tool and a tool for this run only")

weather =
  Pynode.Tool.new(
    name: "weather",
    description: "Tomorrow's weather for a city",
    parameters: [city: [type: :string, required: true]],
    fun: fn %{"city" => city} -> %{"city" => city, "sky" => "clear", "high_c" => 21} end
  )

{:ok, result} = Pynode.run(:clerk, "Bolts in stock, and the weather in Lisbon?", tools: [weather])
Demo.show("output", result.output)
Demo.show("usage", result.usage)

IO.puts("\n== Pynode.stream")

Pynode.stream(:clerk, "And nuts?")
|> Enum.each(fn
  {:done, result} -> Demo.show("  done", result.output)
  event -> Demo.show("  event", event)
end)

IO.puts("\n== A conversation kept as terms, passed back")
{:ok, first} = Pynode.run(:clerk, "Remember: I am Ada.", messages_as: :terms)

{:ok, second} =
  Pynode.run(:clerk, "Who am I?", messages_as: :terms, message_history: first.messages)

Demo.show("messages after two runs", length(second.messages))

IO.puts("\n== Errors are values")
Demo.show("unknown agent", Pynode.run(:nobody, "Hi"))
Demo.show("unknown model", Pynode.run(:clerk, "Hi", model: "nosuch:model"))

slow = Pynode.Tool.new(name: "slow", fun: fn _ -> Process.sleep(10_000) end)
Demo.show("timeout (cancelled on node)", Pynode.run(:clerk, "Hi", tools: [slow], timeout: 500))

IO.puts("\n== kill -9 of the Python node: the library restarts it and re-creates :clerk")
:ok = Pynode.subscribe(Demo.Py)
receive do: ({:pynode, :up, _} -> :ok), after: (1_000 -> :ok)
{_, 0} = System.cmd("kill", ["-9", "#{Pynode.os_pid(Demo.Py)}"])

receive do: ({:pynode, :down, n} -> Demo.show("event", {:pynode, :down, n})),
        after: (10_000 -> :ok)

Demo.show("a run while it is away", Pynode.run(:clerk, "Hi"))
receive do: ({:pynode, :up, n} -> Demo.show("event", {:pynode, :up, n})), after: (60_000 -> :ok)
:ok = Pynode.Agent.await_ready(:clerk, 60_000)
{:ok, again} = Pynode.run(:clerk, "Bolts?")
Demo.show("the next run", again.output)
Demo.show("new OS pid", Pynode.os_pid(Demo.Py))
IO.puts("\nElixir library demo finished.")
