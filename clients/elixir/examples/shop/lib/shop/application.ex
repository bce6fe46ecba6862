defmodule Shop.Application do
  @moduledoc "The Python node and the shop's assistant on it (none when `:start_pynode` is false)."
  use Application

  @impl true
  def start(_type, _args) do
    children =
      if Application.get_env(:shop, :start_pynode, true) do
        cmd = Application.get_env(:shop, :pynode_cmd) || System.get_env("PYNODE_CMD", "pynode")
        [{Pynode, name: Shop.Py, start: [cmd: cmd]}, Shop.assistant(Shop.Py)]
      else
        []
      end

    Supervisor.start_link(children, strategy: :rest_for_one, name: Shop.Supervisor)
  end
end
