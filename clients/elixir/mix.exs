defmodule Pynode.MixProject do
  use Mix.Project

  @version "0.1.0"

  def project do
    [
      app: :pynode,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: [],
      docs: [main: "Pynode"],
      description:
        "pydantic-ai agents on a pynode Python node, run from Elixir: supervision, tools, streaming."
    ]
  end

  def application do
    [extra_applications: [:logger], mod: {Pynode.Application, []}]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
