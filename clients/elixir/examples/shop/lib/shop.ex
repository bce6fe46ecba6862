defmodule Shop do
  @moduledoc """
  The shop's assistant. Every function takes `Pynode.run/3` options last, over the defaults
  here (a 30 s `:timeout`, the store in `:deps`): tests give `:model` and `:pynode` that way.
  `:store` is the customer's store (default `"lisbon"`).
  """

  @agent :shop_assistant
  @quote_output [
    total: [type: :number, required: true, doc: "The sum of the lines' subtotals"],
    lines: [
      type: {:list, {:map, [sku: :string, qty: :integer, subtotal: :number]}},
      required: true
    ]
  ]

  @doc "The assistant's child spec, on the `Pynode` child `pynode`."
  @spec assistant(Pynode.pynode()) :: {Pynode.Agent, keyword()}
  def assistant(pynode) do
    {Pynode.Agent,
     pynode: pynode,
     name: @agent,
     spec: %{
       model: Application.get_env(:shop, :model, "test"),
       instructions: "You are the shop's assistant. Check stock with the stock tool; be brief."
     },
     tools: [
       Pynode.Tool.new(
         name: "stock",
         description: "How many of a SKU the customer's store has",
         parameters: [sku: [type: :string, required: true]],
         fun: &Shop.Inventory.stock/2
       )
     ]}
  end

  @doc "Answers a customer's question: `{:ok, text}` or `{:error, %Pynode.Error{}}`."
  @spec ask(String.t(), keyword()) :: {:ok, String.t()} | {:error, Pynode.Error.t()}
  def ask(question, opts \\ []) do
    with {:ok, result} <- run(question, opts), do: {:ok, result.output}
  end

  @doc "Like `ask/2`, calling `fun` with each piece of the answer's text as the model writes it."
  @spec stream_answer(String.t(), (String.t() -> any()), keyword()) ::
          {:ok, String.t()} | {:error, Pynode.Error.t()}
  def stream_answer(question, fun, opts \\ []) do
    on_event = fn
      {:text_delta, text} -> fun.(text)
      _other -> :ok
    end

    ask(question, Keyword.put(opts, :on_event, on_event))
  end

  @doc """
  One turn of a conversation: `{:ok, answer, history}`, `history` being the last `:keep` turns
  (default 5) to pass to the next call.
  """
  @spec chat(String.t(), [map()], keyword()) ::
          {:ok, String.t(), [map()]} | {:error, Pynode.Error.t()}
  def chat(question, history \\ [], opts \\ []) do
    {keep, opts} = Keyword.pop(opts, :keep, 5)

    with {:ok, result} <- run(question, [message_history: history] ++ opts) do
      {:ok, result.output, Pynode.Messages.keep_last(result, keep)}
    end
  end

  @doc """
  A quote for `items` (`[{sku, qty}]`) at today's prices: `{:ok, %{"total" => t, "lines" => [...]}}`.
  """
  @spec quote([{String.t(), pos_integer()}], keyword()) ::
          {:ok, map()} | {:error, Pynode.Error.t()}
  def quote(items, opts \\ []) do
    prices = Shop.Inventory.prices(Enum.map(items, &elem(&1, 0)))

    price =
      Pynode.Tool.new(
        name: "price",
        description: "The unit price of a SKU for this quote",
        parameters: [sku: [type: :string, required: true]],
        fun: fn %{"sku" => sku} ->
          with :error <- Map.fetch(prices, sku), do: {:error, "#{sku} is not in this quote"}
        end
      )

    wanted = Enum.map_join(items, ", ", fn {sku, qty} -> "#{qty} x #{sku}" end)
    opts = [tools: [price], output: @quote_output] ++ opts

    with {:ok, result} <- run("Quote these items: #{wanted}", opts), do: {:ok, result.output}
  end

  defp run(prompt, opts) do
    {store, opts} = Keyword.pop(opts, :store, "lisbon")
    Pynode.run(@agent, prompt, Keyword.merge([deps: %{store: store}, timeout: 30_000], opts))
  end
end
