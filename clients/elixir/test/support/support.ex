defmodule Pynode.TestSupport do
  @moduledoc false
  # Test support: the repo's Python node and bounded polls.

  @root Path.expand("../../../..", __DIR__)

  def root, do: @root

  def pynode_cmd do
    path = Path.join(@root, ".venv/bin/pynode")

    unless File.exists?(path) do
      raise "the Python node #{path} is missing: run `bash -c 'source scripts/_setup.sh'` in #{@root}"
    end

    path
  end

  def agents_dir, do: Path.expand("../agents", __DIR__)

  def start_opts, do: [cmd: pynode_cmd(), args: ["--agents", agents_dir()]]

  def unique_node(prefix), do: :"#{prefix}#{System.unique_integer([:positive])}@127.0.0.1"

  def node_runs(node) do
    {:ok, %{runs: runs}} = GenServer.call({:pynode, node}, :info)
    runs
  end

  @doc "Calls `fun` until it returns a truthy value, at most `tries` times `interval` ms apart."
  def eventually(fun, tries \\ 100, interval \\ 100) do
    Enum.reduce_while(1..tries, nil, fn _, _ ->
      case fun.() do
        result when result in [nil, false] ->
          Process.sleep(interval)
          {:cont, false}

        result ->
          {:halt, result}
      end
    end)
  end

  def alive_os_pid?(os_pid),
    do: match?({_, 0}, System.cmd("kill", ["-0", "#{os_pid}"], stderr_to_stdout: true))
end
