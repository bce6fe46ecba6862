defmodule Pynode.TestSupport.Peer do
  @moduledoc false
  # A second Elixir node for the cluster tests, started with :peer on 127.0.0.1 with this node's
  # code paths and cookie: it runs a Pynode.Cluster of its own over Python nodes that run
  # already, and makes runs from there with an Elixir tool served on that node.

  @doc "Starts the peer node `name@127.0.0.1` with the pynode application: `{peer_pid, node}`."
  def start(name) do
    paths = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])
    cookie = [~c"-setcookie", Atom.to_charlist(Node.get_cookie())]

    {:ok, peer, node} =
      :peer.start_link(%{
        name: name,
        host: ~c"127.0.0.1",
        longnames: true,
        args: cookie ++ paths
      })

    {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:pynode])
    {peer, node}
  end

  @doc """
  On the peer: a `Pynode.Cluster` named `name` over `nodes`, and a `Pynode.Agent` on it for each
  keyword list in `agents`, kept after the caller returns.
  """
  def start_cluster(name, nodes, agents \\ []) do
    children = [
      {Pynode.Cluster, name: name, nodes: nodes}
      | for(opts <- agents, do: {Pynode.Agent, [pynode: name] ++ opts})
    ]

    {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)

    Process.unlink(sup)
    :ok = Pynode.await_ready(name, 30_000)
    :ok
  end

  @doc """
  `count` runs of `agent` through `cluster`, `concurrency` at a time, each with the tool
  `where`: a list of `{summary, ms}`, the summary `{:ok, served_by, output}` or
  `{:error, kind, message}` (anything else as it came).
  """
  def run_many(agent, cluster, count, concurrency, timeout) do
    opts = [pynode: cluster, timeout: timeout, tools: [tool()]]

    1..count
    |> Task.async_stream(
      fn i ->
        started = System.monotonic_time(:millisecond)
        result = Pynode.run(agent, "run #{i} from #{node()}", opts)
        {summary(result), System.monotonic_time(:millisecond) - started}
      end,
      max_concurrency: concurrency,
      timeout: timeout * 3
    )
    |> Enum.map(fn {:ok, outcome} -> outcome end)
  end

  defp summary({:ok, %Pynode.Result{node: node, output: output}}), do: {:ok, node, output}
  defp summary({:error, %Pynode.Error{kind: kind, message: message}}), do: {:error, kind, message}
  defp summary(other), do: other

  defp tool,
    do:
      Pynode.Tool.new(
        name: "where",
        parameters: [n: [type: :integer, required: true]],
        fun: &__MODULE__.where/1
      )

  @doc "The tool: it names the node it runs on."
  def where(%{"n" => n}), do: "tool #{n} ran on #{node()}"
end
