defmodule Pynode.NodeNameTest do
  # The Python node's name: derived from this node's when left out, and refused before anything
  # starts when this node could never reach it (the `--sname` app that hung on py@127.0.0.1).
  use ExUnit.Case, async: false

  import Pynode.TestSupport

  setup_all do
    # As the first Pynode child of a `mix test` run would: long names, on 127.0.0.1.
    unless Node.alive?(),
      do: {:ok, _} = :net_kernel.start([:"pynode_client_#{System.pid()}@127.0.0.1", :longnames])

    :ok
  end

  test "a short name from a long-named app is an ArgumentError that says why, before any start" do
    error =
      assert_raise ArgumentError, fn ->
        Pynode.start_link(name: NodeNameTest.Short, node: :py@localhost, start: start_opts())
      end

    assert error.message =~ ":node :py@localhost is a short name"
    assert error.message =~ "runs with long names (--name)"
    assert Process.whereis(NodeNameTest.Short) == nil
  end

  test "a name that is not a node name is an ArgumentError" do
    for bad <- [:nohost, :"@host", :py@, "py@127.0.0.1", 42] do
      assert_raise ArgumentError, ~r/:node must be a node name/, fn ->
        Pynode.start_link(name: NodeNameTest.Bad, node: bad)
      end
    end
  end

  test "left out, the name is this node's with _py, in this node's mode" do
    [name, host] = node() |> Atom.to_string() |> String.split("@")
    assert Pynode.NodeName.resolve(nil) == :"#{name}_py@#{host}"
    assert Pynode.NodeName.resolve(:"other@127.0.0.1") == :"other@127.0.0.1"
  end

  test "an app started with --sname gets a short-named Python node it can reach" do
    ebin = Path.join(:code.lib_dir(:pynode), "ebin")

    script = """
    Logger.configure(level: :warning)
    {:ok, _} = Application.ensure_all_started(:pynode)
    {:ok, _} = Pynode.start_link(name: App.Py, start: [cmd: #{inspect(pynode_cmd())}, args: ["--agents", #{inspect(agents_dir())}]])
    result = Pynode.await_ready(App.Py, 60_000)
    py = Pynode.node_name(App.Py)
    IO.puts("ready=\#{inspect(result)} node=\#{py} ping=\#{inspect(GenServer.call({:pynode, py}, :ping))}")
    GenServer.stop(App.Py)
    """

    {out, status} =
      System.cmd(
        "timeout",
        [
          "120",
          System.find_executable("elixir"),
          "--sname",
          "shop@localhost",
          "--cookie",
          "sname_test"
        ] ++
          ["--erl", "-start_epmd false", "-pa", to_string(ebin), "-e", script],
        stderr_to_stdout: true
      )

    assert status == 0, out
    assert out =~ "ready=:ok node=shop_py@localhost ping=:pong"
    refute out =~ "is illegal"
  end
end
