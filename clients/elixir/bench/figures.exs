# Figures for the Elixir client, printed as numbers (run by scripts/bench_elixir, which starts a
# private epmd): the overhead of Pynode.run/3 over a raw GenServer.call run of the same agent
# (TestModel, interleaved, medians), the time from kill -9 of the Python node to the next
# successful run, and the library's size in lines.

defmodule Bench do
  def median(samples) do
    sorted = Enum.sort(samples)
    Enum.at(sorted, div(length(sorted), 2))
  end

  def time_us(fun) do
    {us, result} = :timer.tc(fun)
    {us, result}
  end
end

[pynode_cmd, runs_arg, kills_arg] = System.argv()
{runs, kills} = {String.to_integer(runs_arg), String.to_integer(kills_arg)}
node = :"bench#{System.os_time()}@127.0.0.1"

{:ok, _} =
  Supervisor.start_link(
    [
      {Pynode, name: Bench.Py, node: node, start: [cmd: pynode_cmd], backoff_initial: 100},
      {Pynode.Agent, pynode: Bench.Py, name: :bench, spec: %{model: "test"}}
    ],
    strategy: :rest_for_one
  )

:ok = Pynode.Agent.await_ready(:bench, 60_000)

for _ <- 1..50 do
  {:ok, _} = GenServer.call({:bench, node}, {:run, "hello", %{}}, 60_000)
  {:ok, _} = Pynode.run(:bench, "hello")
end

{raw, lib} =
  Enum.reduce(1..runs, {[], []}, fn _, {raw, lib} ->
    {r, {:ok, _}} =
      Bench.time_us(fn -> GenServer.call({:bench, node}, {:run, "hello", %{}}, 60_000) end)

    {l, {:ok, _}} = Bench.time_us(fn -> Pynode.run(:bench, "hello") end)
    {[r | raw], [l | lib]}
  end)

{raw_med, lib_med} = {Bench.median(raw), Bench.median(lib)}
IO.puts("runs (TestModel, #{runs} each, interleaved)")
IO.puts("  raw GenServer.call {:run, ...}: median #{raw_med} us")
IO.puts("  Pynode.run/3:                   median #{lib_med} us")
IO.puts("  overhead: #{lib_med - raw_med} us (#{Float.round(lib_med / raw_med, 2)}x)")

restarts =
  for _ <- 1..kills do
    os_pid = Pynode.os_pid(Bench.Py)
    t0 = System.monotonic_time(:millisecond)
    {_, 0} = System.cmd("kill", ["-9", "#{os_pid}"])

    Stream.repeatedly(fn ->
      case Pynode.run(:bench, "hello", timeout: 5_000) do
        {:ok, _} ->
          true

        {:error, _} ->
          Process.sleep(20)
          false
      end
    end)
    |> Enum.take_while(&(&1 == false))

    System.monotonic_time(:millisecond) - t0
  end

IO.puts("kill -9 of the Python node to the next successful run (backoff_initial 100 ms)")
IO.puts("  #{kills} times: median #{Bench.median(restarts)} ms, all #{inspect(restarts)}")

lib = Path.wildcard(Path.expand("../lib/**/*.ex", __DIR__))
lines = lib |> Enum.map(&(File.read!(&1) |> String.split("\n") |> length())) |> Enum.sum()
IO.puts("library size: #{lines} lines in #{length(lib)} files (lib/, docs included)")
