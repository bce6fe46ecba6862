defmodule Pynode.DistributionTest do
  # An application whose node is not distributed and finds no epmd: the library starts one, as
  # `erl -name` would, then distribution, then the Python node, and a run goes through.
  use ExUnit.Case, async: false

  import Pynode.TestSupport

  @tag timeout: 180_000
  test "a node that is not distributed, with no epmd to reach, starts epmd and distribution itself" do
    port = free_port()
    assert {:error, _} = :gen_tcp.connect({127, 0, 0, 1}, port, [], 200)
    node = unique_node("noepmd")
    dir = Path.join(System.tmp_dir!(), "pynode_noepmd_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    script = Path.join(dir, "app.exs")

    File.write!(script, """
    false = Node.alive?()
    {:ok, _} = Application.ensure_all_started(:pynode)
    start = [cmd: #{inspect(pynode_cmd())}, args: ["--agents", #{inspect(agents_dir())}]]
    {:ok, _} = Pynode.start_link(name: :py, node: #{inspect(node)}, cookie: :noepmd, start: start)
    :ok = Pynode.await_ready(:py, 60_000)
    {:ok, :hello} = GenServer.call({:pynode, #{inspect(node)}}, {:create_agent, :hello, %{model: "test"}})
    {:ok, result} = Pynode.run({:hello, #{inspect(node)}}, "hi")
    IO.puts("ALIVE \#{Node.alive?()} AS \#{node()} OUTPUT \#{result.output}")
    """)

    ebin = Application.app_dir(:pynode, "ebin")

    try do
      {out, status} =
        System.cmd("timeout", ["120", "elixir", "-pa", ebin, script],
          env: [{"ERL_EPMD_PORT", "#{port}"}],
          stderr_to_stdout: true
        )

      assert status == 0, out
      assert out =~ ~r/ALIVE true AS pynode_client_\d+@127\.0\.0\.1 OUTPUT success/, out
      assert out =~ "no epmd answers; starting", out
    after
      # The epmd the script started outlives it, as one started by `erl -name` does: end it, by pid.
      for pid <- epmd_pids(port), do: System.cmd("kill", ["#{pid}"])
      File.rm_rf!(dir)
    end

    assert eventually(fn -> epmd_pids(port) == [] end, 50, 100)
  end

  defp free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :ok = :gen_tcp.close(socket)
    port
  end

  # The epmd processes started with ERL_EPMD_PORT=port (read from /proc): the one the script made.
  defp epmd_pids(port) do
    for entry <- File.ls!("/proc"),
        Regex.match?(~r/^\d+$/, entry),
        File.read("/proc/#{entry}/comm") == {:ok, "epmd\n"},
        {:ok, environ} <- [File.read("/proc/#{entry}/environ")],
        "ERL_EPMD_PORT=#{port}" in String.split(environ, <<0>>),
        do: String.to_integer(entry)
  end
end
