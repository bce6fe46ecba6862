defmodule Pynode.CookieTest do
  # The :cookie option as documented: for the Python node's connection only, handed over in the
  # environment, never on the command line.
  use ExUnit.Case, async: true

  import Pynode.TestSupport

  test ":cookie is the Python node's alone and stays off its command line" do
    node = unique_node("cookie")
    cookie = :"kit_cookie_#{System.unique_integer([:positive])}"

    start_supervised!(
      {Pynode, name: CookieTest.Py, node: node, cookie: cookie, start: start_opts()}
    )

    :ok = Pynode.await_ready(CookieTest.Py, 60_000)

    # This node's own cookie (set when distribution started) is another one.
    assert :erlang.get_cookie(node) == cookie
    assert Node.get_cookie() not in [cookie, :nocookie]
    assert {:ok, %{node: ^node}} = Pynode.info(CookieTest.Py)

    cmdline = File.read!("/proc/#{Pynode.os_pid(CookieTest.Py)}/cmdline")
    refute cmdline =~ Atom.to_string(cookie)
    environ = File.read!("/proc/#{Pynode.os_pid(CookieTest.Py)}/environ")
    assert environ =~ "PYNODE_COOKIE=#{cookie}"
  end
end
