defmodule Pynode.Case do
  @moduledoc """
  An ExUnit case template: one Python node for the test module, under a name no other module
  uses, stopped when the module's tests are done.

      defmodule Shop.AssistantTest do
        use Pynode.Case, async: true, start: [cmd: "/path/to/venv/bin/pynode"]

        test "answers from the tool", %{pynode: py} do
          start_supervised!({Pynode.Agent, pynode: py, name: :shop, spec: %{model: "test"}})
          :ok = Pynode.Agent.await_ready(:shop, pynode: py)

          script = script([tool_call("stock", %{sku: "A1"}), text("In stock.")])
          tool = Pynode.Tool.new(name: "stock", parameters: [sku: :string], fun: &Shop.stock/1)

          assert {:ok, %{output: "In stock."}} =
                   Pynode.run(:shop, "A1?", pynode: py, model: script, tools: [tool])
        end
      end

  `Pynode.Test` is imported (`script/1`, `text/1`, `tool_call/2`, `output/1`, `requests/1`). Each
  test's context has `:pynode` (the `Pynode` child's name, for `pynode:` options) and
  `:pynode_node` (the Python node's name).

  ## Options

    * `:start` - how to start the node, as `Pynode`'s `:start` option (default
      `Application.get_env(:pynode, :test_start, cmd: "pynode")`, read when the tests run). ExUnit
      also evaluates the options of `use` when the module compiles, so a value read from the
      application environment belongs in `config :pynode, test_start: [...]` rather than in
      `start: Application.fetch_env!(...)`
    * `:pynode` - more `Pynode` options (`:cookie`, `:stop_timeout`, ...)
    * `:ready_timeout` - milliseconds to wait for the node (default 60 000)
    * `:async` and the other options of `ExUnit.Case`

  The module's node starts once, in `setup_all`; agents created by one test live on it until
  they are deleted or replaced, so give each test's agents their own names (or `if_exists:
  :replace`, the default of `Pynode.Agent`).
  """

  use ExUnit.CaseTemplate

  using opts do
    {own, _case_opts} = Keyword.split(opts, [:start, :pynode, :ready_timeout])

    quote do
      import Pynode.Test

      setup_all do
        Pynode.Case.start_node(__MODULE__, unquote(own))
      end
    end
  end

  @doc false
  @spec start_node(module(), keyword()) :: {:ok, keyword()}
  def start_node(module, opts) do
    name = Module.concat(module, Pynode)
    suffix = "case#{System.unique_integer([:positive])}"
    node = Pynode.NodeName.unique(suffix)

    start =
      Keyword.get_lazy(opts, :start, fn ->
        Application.get_env(:pynode, :test_start, cmd: "pynode")
      end)

    child_opts =
      opts
      |> Keyword.get(:pynode, [])
      |> Keyword.merge(name: name, node: node, start: start)

    ExUnit.Callbacks.start_supervised!({Pynode, child_opts})

    case Pynode.await_ready(name, Keyword.get(opts, :ready_timeout, 60_000)) do
      :ok ->
        {:ok, pynode: name, pynode_node: node}

      {:error, reason} ->
        raise "Pynode.Case: the Python node #{node} for #{inspect(module)} did not come up: " <>
                inspect(reason)
    end
  end
end
