defmodule Shop.Inventory do
  @moduledoc "The shop's stock and prices: plain Elixir that the assistant's tools read."

  @stock %{"lisbon" => %{"A1" => 3, "B2" => 0}, "porto" => %{"A1" => 1, "B2" => 12}}
  @prices %{"A1" => 9.5, "B2" => 24.0}

  @doc """
  The assistant's `stock` tool: how many of `"sku"` the run's store (`deps.store`) has.
  The node calls it on this node with the model's arguments and the run's context.
  """
  @spec stock(map(), map()) :: map()
  def stock(%{"sku" => sku}, %{deps: deps}) do
    store = Map.get(deps, "store", "lisbon")
    %{"sku" => sku, "store" => store, "in_stock" => get_in(@stock, [store, sku]) || 0}
  end

  @doc "The unit prices of `skus` (those the shop sells)."
  @spec prices([String.t()]) :: %{String.t() => number()}
  def prices(skus), do: Map.take(@prices, skus)
end
