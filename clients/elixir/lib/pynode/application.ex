defmodule Pynode.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    # The registry of Pynode.Agent names, and the supervisor of every run's tool server and of
    # the tool functions they call.
    children = [
      {Registry, keys: :unique, name: Pynode.Registry},
      {Task.Supervisor, name: Pynode.TaskSupervisor}
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: Pynode.Supervisor)
  end
end
