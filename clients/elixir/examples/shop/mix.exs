defmodule Shop.MixProject do
  use Mix.Project

  def project do
    [
      app: :shop,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      deps: [{:pynode, path: "../.."}]
    ]
  end

  def application do
    [extra_applications: [:logger], mod: {Shop.Application, []}]
  end
end
