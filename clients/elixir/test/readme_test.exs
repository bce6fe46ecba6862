defmodule Pynode.ReadmeTest do
  # Every ```elixir block of clients/elixir/README.md and of the project's README.md is run, in
  # order, against a real node (the blocks start it themselves, as py@127.0.0.1 with the `pynode`
  # command of the repo's .venv on PATH). Bindings carry from block to block, as in one iex
  # session; a line `#=> value` after an expression asserts that the expression gives that value.
  use ExUnit.Case, async: false

  @readmes [
    client: Path.expand("../README.md", __DIR__),
    project: Path.join(Pynode.TestSupport.root(), "README.md")
  ]

  setup do
    bin = Path.dirname(Pynode.TestSupport.pynode_cmd())
    path = System.get_env("PATH", "")
    System.put_env("PATH", bin <> ":" <> path)
    Code.compiler_options(ignore_module_conflict: true)

    on_exit(fn ->
      System.put_env("PATH", path)
      Code.compiler_options(ignore_module_conflict: false)
    end)
  end

  for {which, file} <- @readmes do
    @file_path file
    test "the #{which} README's Elixir snippets run" do
      blocks = elixir_blocks(@file_path)
      assert length(blocks) >= 3, "expected Elixir snippets in #{@file_path}"

      try do
        Enum.reduce(Enum.with_index(blocks, 1), [], fn {block, n}, binding ->
          run_block(block, binding, "#{Path.basename(@file_path)} block #{n}")
        end)
      after
        if pid = Process.whereis(MyApp.Supervisor), do: Supervisor.stop(pid)
      end
    end
  end

  test "the snippets are found: a fence that is not ```elixir is not run" do
    assert elixir_blocks(Path.expand("../README.md", __DIR__)) |> hd() =~ "{:pynode, path:"
  end

  defp elixir_blocks(file) do
    Regex.scan(~r/^```elixir\n(.*?)^```/ms, File.read!(file), capture: :all_but_first)
    |> Enum.map(&hd/1)
  end

  # Runs a block's code, checking each `#=> expected` line against the expression before it.
  defp run_block(block, binding, where) do
    {code, binding} =
      block
      |> String.split("\n")
      |> Enum.reduce({[], binding}, fn line, {code, binding} ->
        case Regex.run(~r/^#=> (.*)$/, line) do
          [_, expected] ->
            {value, binding} = eval(Enum.reverse(code), binding, where)
            {expected_value, _} = Code.eval_string(expected)

            assert value == expected_value,
                   "#{where}: expected #{expected}, got #{inspect(value)}"

            {[], binding}

          nil ->
            {[line | code], binding}
        end
      end)

    {_value, binding} = eval(Enum.reverse(code), binding, where)
    binding
  end

  defp eval(lines, binding, where) do
    Code.eval_string(Enum.join(lines, "\n"), binding, file: where)
  end
end
