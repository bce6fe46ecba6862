defmodule Pynode.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    children = [{Registry, keys: :unique, name: Pynode.Registry}]
    Supervisor.start_link(children, strategy: :one_for_one, name: Pynode.Supervisor)
  end
end
