defmodule Pynode.SetupTaskTest do
  # mix pynode.setup against reality: a new application that depends on this library runs the
  # task, pip installs pynode (and an extra) from this checkout into a virtualenv under /tmp, and
  # the `cmd:` the task prints starts a Python node that answers. Running it again keeps the
  # virtualenv and reinstalls the package. The error paths install nothing: those about the
  # dependency run mix in small apps of their own, the others run in this VM.
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO
  import Pynode.TestSupport

  @library Path.expand("..", __DIR__)

  setup do
    dir = Path.join(System.tmp_dir!(), "pynode_setup_test_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    %{dir: dir}
  end

  # Measured on 2 shared cores: python -m venv 4-6 s, pip install from the package index 10-19 s;
  # this whole test 25-35 s.
  @tag timeout: 240_000
  test "an app's venv: pip installs this checkout, the printed cmd: starts a node that answers",
       %{dir: dir} do
    app = Path.join(dir, "shop")
    File.mkdir_p!(app)

    File.write!(Path.join(app, "mix.exs"), """
    defmodule Shop.MixProject do
      use Mix.Project

      def project,
        do: [app: :shop, version: "0.1.0", deps: [{:pynode, path: #{inspect(@library)}}]]
    end
    """)

    File.write!(Path.join(app, ".gitignore"), "/_build/\n")

    # As a user runs it: mix compiles the dependency, then the task makes the default venv.
    {out, status} =
      System.cmd("mix", ["pynode.setup", "--extras", "fast"],
        cd: app,
        # PYNODE_COMPILE=0: the codec stays pure Python (scripts/test checks the compiled build
        # apart), which keeps this test to its half minute.
        env: [{"MIX_BUILD_PATH", nil}, {"MIX_ENV", "dev"}, {"PYNODE_COMPILE", "0"}],
        stderr_to_stdout: true
      )

    assert status == 0, out
    venv = Path.join(app, ".pynode/venv")
    assert out =~ "Creating a virtualenv"
    # pip's own output, streamed through
    assert out =~ ~r/Successfully installed .*pynode-#{Regex.escape(checkout_version())}/
    assert out =~ ~s({Pynode, name: Shop.Py, start: [cmd: "#{venv}/bin/pynode"]})
    assert out =~ "Add /.pynode/ to .gitignore"
    [_, cmd] = Regex.run(~r/start: \[cmd: "([^"]+)"\]/, out)

    # The package is this checkout's modules, no more (no stale build output).
    [site] = Path.wildcard(Path.join(venv, "lib/python3*/site-packages/pynode"))
    assert modules(site) -- modules(Path.join(root(), "pynode")) == []
    assert "cli.py" in modules(site)

    # The printed cmd: starts the node, with uvloop from the `fast` extra.
    node = unique_node("setup")

    start_supervised!(
      {Pynode,
       name: SetupTaskTest.Py,
       node: node,
       start: [cmd: cmd, args: ["--agents", agents_dir(), "--loop", "uvloop"]]}
    )

    assert Pynode.await_ready(SetupTaskTest.Py, 60_000) == :ok
    assert GenServer.call({:pynode, node}, :ping) == :pong
    assert {:ok, %{version: version}} = Pynode.info(SetupTaskTest.Py)
    assert version == checkout_version()
    os_pid = Pynode.os_pid(SetupTaskTest.Py)
    assert File.read!("/proc/#{os_pid}/cmdline") =~ "#{venv}/bin/"
    stop_supervised!(SetupTaskTest.Py)

    # Again, from the library's own project in this VM: the venv stays, pynode is reinstalled.
    kept = Path.join(venv, "kept-by-a-rerun")
    File.write!(kept, "")

    out = capture_io(fn -> Mix.Task.rerun("pynode.setup", ["--path", venv]) end)
    assert out =~ "The virtualenv #{venv} exists"
    refute out =~ "Creating a virtualenv"
    assert out =~ ~r/Successfully installed .*pynode-/
    assert out =~ ~s(start: [cmd: "#{venv}/bin/pynode"])
    assert File.exists?(kept)

    # A pip that fails (here: no index to get setuptools from) is a Mix error with its last lines.
    wheels = Path.join(dir, "no-wheels")
    File.mkdir_p!(wheels)

    message =
      with_env(%{"PIP_NO_INDEX" => "1", "PIP_FIND_LINKS" => wheels}, fn ->
        setup_error(["--path", venv])
      end)

    assert message =~ ~r/^pip install --upgrade .* \(a copy of #{Regex.escape(root())}\) failed/
    assert message =~ "(exit status 1). Its last lines:\n"
    assert message =~ "setuptools"
  end

  test "mix help pynode.setup shows the task's doc" do
    out = capture_io(fn -> Mix.Task.rerun("help", ["pynode.setup"]) end)
    assert out =~ "mix pynode.setup"
    assert out =~ "--extras"
    assert Mix.Task.shortdoc(Mix.Tasks.Pynode.Setup) =~ "virtualenv"
  end

  describe "errors, before anything is made" do
    test "a project that does not depend on :pynode", %{dir: dir} do
      project!(dir, :lonely, [])
      message = app_setup_error(dir, ["--path", Path.join(dir, "venv")])
      assert message =~ "this project does not depend on :pynode"
      assert message =~ ~s({:pynode, path: "path/to/pynode/clients/elixir"})
      refute File.exists?(Path.join(dir, "venv"))
    end

    test "a :pynode library outside a checkout (a sparse git dependency)", %{dir: dir} do
      library = fake_library!(Path.join(dir, "sparse"))
      app = Path.join(dir, "app")
      project!(app, :sparse_app, [{:pynode, path: library}])

      message = app_setup_error(app, [])
      assert message =~ "no pynode checkout around the :pynode library at #{library}"
      assert message =~ "no pyproject.toml in #{Path.join(dir, "sparse")}"
      assert message =~ ~s(use subdir: "clients/elixir")
      refute File.exists?(Path.join(app, ".pynode"))
    end

    test "a checkout that is another Python project", %{dir: dir} do
      library = fake_library!(Path.join(dir, "other"))
      File.write!(Path.join(dir, "other/pyproject.toml"), "[project]\nname = \"other\"\n")
      app = Path.join(dir, "app")
      project!(app, :other_app, [{:pynode, path: library}])

      message = app_setup_error(app, [])
      assert message =~ ~s(pyproject.toml is not pynode's: its project name is "other")
    end

    test "a --python that does not exist, does not run, or is too old", %{dir: dir} do
      venv = Path.join(dir, "venv")

      assert setup_error(["--python", "/nonexistent/python3", "--path", venv]) ==
               "--python /nonexistent/python3: no such executable (neither a file nor on the PATH)"

      assert setup_error(["--python", "python3.99-nonexistent", "--path", venv]) =~
               "--python python3.99-nonexistent: no such executable"

      assert setup_error(["--python", System.find_executable("false"), "--path", venv]) =~
               "does not run as Python: exit status 1"

      # Stands in for an old interpreter: it answers the version question as Python 3.10 would.
      old = script!(dir, "python3.10", "echo 3.10.4")

      assert setup_error(["--python", old, "--path", venv]) ==
               "--python #{old} is Python 3.10.4; pynode needs Python 3.11 or newer"

      refute File.exists?(venv)
    end

    test "no Python 3.11+ on the PATH names what it found", %{dir: dir} do
      bin = Path.join(dir, "bin")
      script!(bin, "python3", "echo 3.10.4")
      script!(bin, "python3.12", "echo 'python3.12: not installed' >&2; exit 127")

      message =
        with_env(%{"PATH" => bin}, fn -> setup_error(["--path", Path.join(dir, "venv")]) end)

      assert message =~ "mix pynode.setup needs Python 3.11 or newer; found "

      assert message =~
               ~s{python3.12 (does not run: exit status 127, "python3.12: not installed")}

      assert message =~ "python3 (3.10.4)"
      assert message =~ "or name it with --python"
    end

    test "an unknown extra lists the checkout's", %{dir: dir} do
      message = setup_error(["--extras", "openai,nosuch", "--path", Path.join(dir, "venv")])

      assert message =~
               "unknown pynode extra(s): nosuch; its pyproject.toml has: openai, anthropic"

      refute File.exists?(Path.join(dir, "venv"))
    end

    test "a --path that is not a virtualenv is never touched, even with --force", %{dir: dir} do
      precious = Path.join(dir, "precious")
      File.mkdir_p!(precious)
      File.write!(Path.join(precious, "notes.txt"), "keep me")

      message = setup_error(["--path", precious, "--force"])
      assert message =~ "#{precious} exists and is not a virtualenv (it has no pyvenv.cfg)"
      assert File.read!(Path.join(precious, "notes.txt")) == "keep me"
    end

    test "an unknown option or an argument" do
      assert setup_error(["--venv", "x"]) =~ "unknown or invalid option --venv"
      assert setup_error(["somewhere"]) =~ "takes no arguments"
    end
  end

  # The task's Mix.Error message, run in this project.
  defp setup_error(args) do
    {error, _out} =
      with_io(fn -> assert_raise(Mix.Error, fn -> Mix.Task.rerun("pynode.setup", args) end) end)

    error.message
  end

  # The task's error in the project at `app`, run by mix there, with this build's task on the code
  # path (the app's :pynode is not this library, and needs no compiling to fail).
  defp app_setup_error(app, args) do
    ebin = Path.join(:code.lib_dir(:pynode), "ebin")

    {out, status} =
      System.cmd("elixir", ["-pa", ebin, "-S", "mix", "pynode.setup" | args],
        cd: app,
        # PYNODE_COMPILE=0: the codec stays pure Python (scripts/test checks the compiled build
        # apart), which keeps this test to its half minute.
        env: [{"MIX_BUILD_PATH", nil}, {"MIX_ENV", "dev"}, {"PYNODE_COMPILE", "0"}],
        stderr_to_stdout: true
      )

    assert status == 1, out
    assert [_, message] = Regex.run(~r/\*\* \(Mix\) (.*)/s, out), out
    message
  end

  # A mix.exs of its own module name: the VM keeps every project module it compiles.
  defp project!(dir, app, deps) do
    File.mkdir_p!(dir)

    module =
      "SetupTaskTest.#{Macro.camelize(to_string(app))}#{System.unique_integer([:positive])}"

    File.write!(Path.join(dir, "mix.exs"), """
    defmodule #{module}.MixProject do
      use Mix.Project
      def project, do: [app: #{inspect(app)}, version: "0.1.0", deps: #{inspect(deps)}]
    end
    """)
  end

  # A Mix project named :pynode at checkout/clients/elixir, with nothing else around it.
  defp fake_library!(checkout) do
    library = Path.join(checkout, "clients/elixir")
    project!(library, :pynode, [])
    library
  end

  defp script!(dir, name, body) do
    File.mkdir_p!(dir)
    path = Path.join(dir, name)
    File.write!(path, "#!/bin/sh\n#{body}\n")
    File.chmod!(path, 0o755)
    path
  end

  # Runs fun with these OS environment variables (the task's tools inherit them), then puts back
  # what was there.
  defp with_env(vars, fun) do
    saved = Map.new(vars, fn {name, _} -> {name, System.get_env(name)} end)
    System.put_env(vars)

    try do
      fun.()
    after
      Enum.each(saved, fn
        {name, nil} -> System.delete_env(name)
        {name, value} -> System.put_env(name, value)
      end)
    end
  end

  defp modules(dir) do
    dir |> Path.join("**/*.py") |> Path.wildcard() |> Enum.map(&Path.relative_to(&1, dir))
  end

  defp checkout_version do
    [_, version] =
      Regex.run(~r/^version = "([^"]+)"/m, File.read!(Path.join(root(), "pyproject.toml")))

    version
  end
end
