defmodule Pynode.Test.Script do
  @moduledoc """
  A scripted model made by `Pynode.Test.script/1`: give it as `model:`; read it back with
  `Pynode.Test.requests/1`.
  """

  @typedoc "A scripted model."
  @type t :: %__MODULE__{holder: pid(), model: {:function, (list(), map() -> term())}}

  @enforce_keys [:holder, :model]
  defstruct [:holder, :model]

  @doc false
  @spec respond(pid(), list(), map()) :: term()
  def respond(holder, messages, info) do
    next =
      Agent.get_and_update(holder, fn %{turns: turns, seen: seen} = state ->
        seen = [%{messages: messages, info: info} | seen]

        case turns do
          [turn | rest] -> {{:ok, turn}, %{state | turns: rest, seen: seen}}
          [] -> {{:none, length(seen)}, %{state | seen: seen}}
        end
      end)

    case next do
      {:ok, turn} when is_function(turn, 2) -> turn.(messages, info)
      {:ok, turn} -> turn
      {:none, n} -> raise "the script has no turn #{n}: it was given #{n - 1}"
    end
  end

  defimpl Inspect do
    def inspect(%{holder: holder}, _opts), do: "#Pynode.Test.Script<#{inspect(holder)}>"
  end
end
