defmodule Pynode.NodeName do
  @moduledoc false
  # The Python node's name: the one given, checked against this node's name mode, or, when none
  # is given, one derived from this node's own name (`<name>_py@<host>`), short or long as this
  # node is. A short-named app (`--sname`) cannot reach `py@127.0.0.1` (the BEAM calls that host
  # illegal and retries for ever), so such a name is refused here, before any process starts.

  @doc "The node name to use for `node` (the `:node` option, or `nil`)."
  @spec resolve(node() | nil) :: node()
  def resolve(nil) do
    case this_node() do
      nil -> :"pynode_py_#{System.pid()}@127.0.0.1"
      {name, host} -> :"#{name}_py@#{host}"
    end
  end

  def resolve(node) when is_atom(node) do
    {_name, host} = split(node) || raise ArgumentError, bad_name(node)
    check_mode(node, host, mode())
    node
  end

  def resolve(other), do: raise(ArgumentError, bad_name(other))

  @doc "A name like `resolve(nil)` gives, made unique in this OS process by `suffix`."
  @spec unique(String.t()) :: node()
  def unique(suffix) do
    [name, host] = nil |> resolve() |> Atom.to_string() |> String.split("@")
    :"#{name}_#{suffix}@#{host}"
  end

  @doc "Whether `node` is a long name (its host has a dot: a domain or an IP address)."
  @spec longname?(node()) :: boolean()
  def longname?(node), do: node |> Atom.to_string() |> String.contains?(".")

  defp check_mode(_node, _host, :none), do: :ok

  defp check_mode(node, host, :short) do
    if String.contains?(host, "."),
      do:
        raise(ArgumentError, """
        :node #{inspect(node)} is a long name, but this node (#{node()}) runs with short names \
        (--sname): it cannot reach it. Use a short name such as :"py@#{short_host()}", or leave \
        :node out to get :"#{elem(this_node(), 0)}_py@#{short_host()}"\
        """)

    :ok
  end

  defp check_mode(node, host, :long) do
    unless String.contains?(host, "."),
      do:
        raise(ArgumentError, """
        :node #{inspect(node)} is a short name, but this node (#{node()}) runs with long names \
        (--name): it cannot reach it. Use a long name such as :"py@127.0.0.1", or leave :node out\
        """)

    :ok
  end

  defp mode do
    cond do
      not Node.alive?() -> :none
      :net_kernel.longnames() == true -> :long
      true -> :short
    end
  end

  defp this_node do
    if Node.alive?(), do: split(node()), else: nil
  end

  defp short_host, do: elem(this_node(), 1)

  defp split(node) do
    case node |> Atom.to_string() |> String.split("@") do
      [name, host] when name != "" and host != "" -> {name, host}
      _ -> nil
    end
  end

  defp bad_name(node),
    do: ":node must be a node name such as :\"py@127.0.0.1\" (or left out), got: #{inspect(node)}"
end
