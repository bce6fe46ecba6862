defmodule Mix.Tasks.Pynode.Setup do
  @shortdoc "Creates a virtualenv with the pynode Python node, from the :pynode dependency"

  @moduledoc """
  Creates a Python virtualenv with the pynode Python node in it, and prints the `start:` option
  that runs it: an Elixir team needs no Python tooling beyond a Python 3.11+ interpreter.

      mix pynode.setup
      mix pynode.setup --extras openai,anthropic
      mix pynode.setup --path /opt/my_app/pynode --python python3.12

  The Python package is installed from the pynode checkout the `:pynode` dependency points at (the
  library is its `clients/elixir`), so the node and the library always come from the same commit.
  The task runs `<python> -m venv DIR`, then `DIR/bin/python -m pip install --upgrade
  <checkout>[extras]` (from a fresh copy of the checkout's Python project, so that nothing an
  earlier build left there gets in, and the checkout is not written to), showing the tools' output
  as it comes; it checks that `DIR/bin/pynode` runs and that the package and pydantic-ai import
  from the virtualenv, and prints the child to put in your supervision tree:

      {Pynode, name: MyApp.Py, start: [cmd: "/abs/path/.pynode/venv/bin/pynode"]}

  Running it again reuses the virtualenv and upgrades (reinstalls) the pynode package in it: after
  the checkout moved on (`mix deps.update pynode`), or to add extras. `--force` deletes the
  virtualenv first and makes a new one.

  ## Options

    * `--path DIR` - where the virtualenv goes; default `.pynode/venv` in the current directory
      (the project's). It is not under `_build`, so `mix clean` and `rm -rf _build` leave it;
      add `/.pynode/` to `.gitignore`. A virtualenv holds its own absolute path: do not move it
      or copy it into a release, but run this task (with `--path`, such as `/opt/my_app/pynode`)
      where the release runs, or in the image that builds it.
    * `--python EXE` - the Python to create the virtualenv with: a name on the `PATH` or a path,
      Python 3.11 or newer. Default: the first of `python3.13`, `python3.12`, `python3.11` and
      `python3` on the `PATH` that runs and is 3.11 or newer.
    * `--extras LIST` - extras of the pynode package, comma-separated, as in
      `pip install "pynode[openai,anthropic]"`: `openai` and `anthropic` for those providers'
      models, `fast` for uvloop (the node's `--loop uvloop`). The names are read from the
      checkout's `pyproject.toml`; an unknown one is an error that lists them.
    * `--force` - delete the virtualenv and create it again. Only a directory with a `pyvenv.cfg`
      (a virtualenv) is ever deleted.

  pip reads its own configuration as usual: `PIP_INDEX_URL`, `pip.conf`, `HTTPS_PROXY`.

  ## The checkout

  In an application, the checkout is two levels above the `:pynode` dependency's directory
  (`Mix.Project.deps_paths()[:pynode]`); in the library's own project, two levels above the
  project. Its `pyproject.toml` must be pynode's. A `git:` dependency with
  `sparse: "clients/elixir"` checks out that folder alone, without the Python package: use
  `subdir: "clients/elixir"` instead, which checks out the whole repository.
  """

  use Mix.Task

  # pyproject.toml's requires-python.
  @min_python {3, 11}
  @candidates ~w(python3.13 python3.12 python3.11 python3)
  @default_path ".pynode/venv"
  @switches [path: :string, python: :string, extras: :keep, force: :boolean]
  @tail_lines 25

  @version_probe "import sys; print('%d.%d.%d' % sys.version_info[:3])"

  # The project table of pyproject.toml, read by the chosen Python's own TOML parser.
  @pyproject_probe """
  import sys, tomllib
  with open(sys.argv[1], "rb") as f:
      project = tomllib.load(f).get("project", {})
  print("name", project.get("name", ""))
  print("version", project.get("version", ""))
  for extra in project.get("optional-dependencies", {}):
      print("extra", extra)
  """

  # What the virtualenv's Python imports: its versions, and where the package comes from.
  @installed_probe """
  import importlib.metadata as metadata, os, sys
  import pydantic_ai, pynode
  print("pynode", metadata.version("pynode"))
  print("file", pynode.__file__)
  print("inside", os.path.realpath(pynode.__file__).startswith(os.path.realpath(sys.prefix) + os.sep))
  print("pydantic_ai", metadata.version("pydantic-ai-slim"))
  print("python", "%d.%d.%d" % sys.version_info[:3])
  """

  @impl Mix.Task
  @spec run([String.t()]) :: :ok
  def run(args) do
    opts = parse_args!(args)
    checkout = checkout!()
    python = python!(opts[:python])
    project = pyproject!(python, checkout)
    extras = extras!(Keyword.get_values(opts, :extras), project)
    venv = Path.expand(opts[:path] || @default_path)

    venv_python = venv!(venv, python, opts[:python] != nil, opts[:force] || false)
    install!(venv_python, checkout, extras)
    installed = check!(venv, project)
    print_usage(venv, installed, extras)
    :ok
  end

  ## Options

  defp parse_args!(args) do
    case OptionParser.parse(args, strict: @switches) do
      {opts, [], []} ->
        opts

      {_opts, [extra | _], []} ->
        Mix.raise(
          "mix pynode.setup takes no arguments, got #{inspect(extra)} (see mix help pynode.setup)"
        )

      {_opts, _args, [{switch, _} | _]} ->
        Mix.raise(
          "mix pynode.setup: unknown or invalid option #{switch} (see mix help pynode.setup)"
        )
    end
  end

  ## The checkout

  defp checkout! do
    config = Mix.Project.config()

    library =
      cond do
        Mix.Project.get() == nil ->
          Mix.raise("mix pynode.setup runs in a Mix project that depends on :pynode")

        config[:app] == :pynode ->
          Path.dirname(Mix.Project.project_file())

        path = Mix.Project.deps_paths()[:pynode] ->
          path

        true ->
          Mix.raise("""
          this project does not depend on :pynode. Add it to deps in mix.exs, then run \
          mix pynode.setup again:

              {:pynode, path: "path/to/pynode/clients/elixir"}
          """)
      end

    checkout = Path.expand("../..", library)

    unless File.regular?(Path.join(checkout, "pyproject.toml")) do
      Mix.raise("""
      no pynode checkout around the :pynode library at #{library}: there is no pyproject.toml \
      in #{checkout}, two levels above it. The library must be the clients/elixir folder of a \
      pynode checkout. A git dependency with sparse: "clients/elixir" checks out that folder \
      alone; use subdir: "clients/elixir" instead.\
      """)
    end

    checkout
  end

  defp pyproject!(python, checkout) do
    file = Path.join(checkout, "pyproject.toml")

    case System.cmd(python.exe, ["-c", @pyproject_probe, file], stderr_to_stdout: true) do
      {out, 0} ->
        fields = out |> String.split("\n", trim: true) |> Enum.map(&split_field/1)
        name = field(fields, "name")

        if name != "pynode" do
          Mix.raise(
            "#{file} is not pynode's: its project name is #{inspect(name)}, not \"pynode\"; " <>
              "the :pynode library must be the clients/elixir folder of a pynode checkout"
          )
        end

        %{
          version: field(fields, "version"),
          extras: for({"extra", extra} <- fields, do: extra)
        }

      {out, status} ->
        Mix.raise("cannot read #{file} (exit status #{status}):\n#{indent(last_lines(out))}")
    end
  end

  defp extras!(given, project) do
    wanted =
      given |> Enum.flat_map(&String.split(&1, ",", trim: true)) |> Enum.map(&String.trim/1)

    known = Map.new(project.extras, &{normalize_extra(&1), &1})

    case Enum.reject(wanted, &Map.has_key?(known, normalize_extra(&1))) do
      [] ->
        wanted |> Enum.map(&Map.fetch!(known, normalize_extra(&1))) |> Enum.uniq()

      unknown ->
        Mix.raise(
          "unknown pynode extra(s): #{Enum.join(unknown, ", ")}; " <>
            "its pyproject.toml has: #{Enum.join(project.extras, ", ")}"
        )
    end
  end

  # Extra names compare as packaging normalizes them: case-insensitive, with -, _ and . alike.
  defp normalize_extra(name), do: name |> String.downcase() |> String.replace(~r/[-_.]+/, "-")

  ## Python

  defp python!(nil) do
    found = for name <- @candidates, path = System.find_executable(name), do: {name, path}

    tried =
      Enum.reduce_while(found, [], fn {name, path}, tried ->
        case probe_version(path) do
          {:ok, version} ->
            if new_enough?(version),
              do: {:halt, %{exe: path, version: version}},
              else: {:cont, [{name, format_version(version)} | tried]}

          {:error, why} ->
            {:cont, [{name, "does not run: #{why}"} | tried]}
        end
      end)

    case tried do
      %{} = python ->
        python

      tried ->
        seen =
          case Enum.reverse(tried) do
            [] ->
              "none of #{Enum.join(@candidates, ", ")} is on the PATH"

            tried ->
              "found " <> Enum.map_join(tried, ", ", fn {name, what} -> "#{name} (#{what})" end)
          end

        Mix.raise(
          "mix pynode.setup needs Python #{format_version(@min_python)} or newer; #{seen}. " <>
            "Install one (Debian 12 or later: apt-get install python3 python3-venv), " <>
            "or name it with --python"
        )
    end
  end

  defp python!(exe) do
    path =
      if String.contains?(exe, "/"),
        do: if(File.regular?(exe), do: Path.expand(exe)),
        else: System.find_executable(exe)

    unless path,
      do: Mix.raise("--python #{exe}: no such executable (neither a file nor on the PATH)")

    case probe_version(path) do
      {:ok, version} ->
        unless new_enough?(version) do
          Mix.raise(
            "--python #{exe} is Python #{format_version(version)}; " <>
              "pynode needs Python #{format_version(@min_python)} or newer"
          )
        end

        %{exe: path, version: version}

      {:error, why} ->
        Mix.raise("--python #{exe} does not run as Python: #{why}")
    end
  end

  defp probe_version(exe) do
    case System.cmd(exe, ["-c", @version_probe], stderr_to_stdout: true) do
      {out, 0} ->
        case Regex.run(~r/^(\d+)\.(\d+)\.(\d+)$/, out |> last_lines(1) |> String.trim()) do
          [_ | parts] -> {:ok, parts |> Enum.map(&String.to_integer/1) |> List.to_tuple()}
          nil -> {:error, "it prints #{inspect(String.trim(out))} for its version"}
        end

      {out, status} ->
        {:error, "exit status #{status}, #{out |> String.trim() |> first_line() |> inspect()}"}
    end
  rescue
    error in [ErlangError, File.Error] -> {:error, Exception.message(error)}
  end

  defp new_enough?(version), do: minor(version) >= @min_python

  defp minor({major, minor, _patch}), do: {major, minor}

  defp format_version(version), do: version |> Tuple.to_list() |> Enum.join(".")

  ## The virtualenv

  defp venv!(dir, python, python_given?, force?) do
    cond do
      File.regular?(Path.join(dir, "pyvenv.cfg")) and force? ->
        Mix.shell().info("Deleting the virtualenv #{dir} (--force)")
        File.rm_rf!(dir)
        create_venv!(dir, python)

      File.regular?(Path.join(dir, "pyvenv.cfg")) ->
        reuse_venv!(dir, python, python_given?)

      File.exists?(dir) and not File.dir?(dir) ->
        Mix.raise("--path #{dir} is a file, not a directory for the virtualenv")

      File.dir?(dir) and File.ls!(dir) != [] ->
        Mix.raise(
          "#{dir} exists and is not a virtualenv (it has no pyvenv.cfg); it is left as it is: " <>
            "choose another --path, or empty it"
        )

      true ->
        create_venv!(dir, python)
    end
  end

  defp create_venv!(dir, python) do
    Mix.shell().info(
      "Creating a virtualenv with Python #{format_version(python.version)} in #{dir}"
    )

    case stream_cmd(python.exe, ["-m", "venv", dir]) do
      {0, _tail} ->
        venv_python!(dir)

      {status, tail} ->
        Mix.raise("""
        #{python.exe} -m venv #{dir} failed (exit status #{status}). Its last lines:
        #{indent(tail)}
        On Debian and Ubuntu, venv needs the python3-venv package \
        (python3.12-venv for python3.12, and so on).\
        """)
    end
  end

  defp reuse_venv!(dir, python, python_given?) do
    exe = venv_python!(dir)
    retry = "mix pynode.setup --force deletes it and makes a new one"

    case probe_version(exe) do
      {:ok, version} ->
        unless new_enough?(version) do
          Mix.raise(
            "the virtualenv #{dir} has Python #{format_version(version)}, too old; #{retry}"
          )
        end

        Mix.shell().info(
          "The virtualenv #{dir} exists (Python #{format_version(version)}): upgrading pynode in it"
        )

        if python_given? and minor(version) != minor(python.version) do
          Mix.shell().info(
            "  (not --python's #{format_version(python.version)}: --force remakes it with that one)"
          )
        end

        exe

      {:error, why} ->
        Mix.raise("the virtualenv #{dir} is broken, its Python does not run (#{why}); #{retry}")
    end
  end

  defp venv_python!(dir) do
    exe = Path.join([dir, "bin", "python"])

    unless File.exists?(exe) do
      Mix.raise("#{dir} has a pyvenv.cfg but no bin/python; mix pynode.setup --force remakes it")
    end

    exe
  end

  ## pip

  defp install!(venv_python, checkout, extras) do
    with_extras = if extras == [], do: "", else: "[#{Enum.join(extras, ",")}]"
    Mix.shell().info("Installing pynode#{with_extras} from #{checkout}")

    with_source_copy(checkout, fn source ->
      spec = source <> with_extras

      case stream_cmd(venv_python, ["-m", "pip", "install", "--upgrade", spec]) do
        {0, _tail} ->
          :ok

        {status, tail} ->
          Mix.raise("""
          pip install --upgrade #{spec} (a copy of #{checkout}) failed \
          (exit status #{status}). Its last lines:
          #{indent(tail)}\
          """)
      end
    end)
  end

  # pip builds a project in its own folder, where setuptools leaves build/ and *.egg-info, and
  # the modules a build/ keeps from an earlier install go into the next wheel even once the
  # checkout has dropped them. pip installs from a fresh copy of the Python project instead (the
  # top-level files and the pynode* package folders, as pyproject.toml's packages.find takes),
  # which also leaves the checkout as it was.
  defp with_source_copy(checkout, fun) do
    copy =
      Path.join(
        System.tmp_dir!(),
        "pynode_setup_#{System.pid()}_#{System.unique_integer([:positive])}"
      )

    try do
      File.rm_rf!(copy)
      File.mkdir_p!(copy)

      for name <- File.ls!(checkout), source?(Path.join(checkout, name)) do
        File.cp_r!(Path.join(checkout, name), Path.join(copy, name))
      end

      fun.(copy)
    after
      File.rm_rf(copy)
    end
  end

  defp source?(path) do
    name = Path.basename(path)

    cond do
      String.starts_with?(name, ".") -> false
      File.regular?(path) -> true
      File.dir?(path) -> String.starts_with?(name, "pynode") and Path.extname(name) == ""
      true -> false
    end
  end

  ## The check

  defp check!(venv, project) do
    pynode = Path.join([venv, "bin", "pynode"])

    unless File.exists?(pynode), do: Mix.raise("pip ran, but there is no #{pynode}")

    case System.cmd(pynode, ["--help"], stderr_to_stdout: true) do
      {out, 0} ->
        unless out =~ "usage: pynode",
          do:
            Mix.raise(
              "#{pynode} --help does not show pynode's usage:\n#{indent(last_lines(out))}"
            )

      {out, status} ->
        Mix.raise("#{pynode} --help failed (exit status #{status}):\n#{indent(last_lines(out))}")
    end

    python = Path.join([venv, "bin", "python"])

    fields =
      case System.cmd(python, ["-c", @installed_probe], stderr_to_stdout: true) do
        {out, 0} ->
          out |> String.split("\n", trim: true) |> Enum.map(&split_field/1)

        {out, status} ->
          Mix.raise(
            "pynode or pydantic-ai does not import in #{venv} (exit status #{status}):\n" <>
              indent(last_lines(out))
          )
      end

    version = field(fields, "pynode")
    file = field(fields, "file")

    if field(fields, "inside") != "True" do
      Mix.raise(
        "#{python} imports pynode from #{file}, not from the virtualenv: is PYTHONPATH set?"
      )
    end

    if project.version not in ["", version] do
      Mix.raise("#{venv} has pynode #{version}, but the checkout is #{project.version}")
    end

    %{
      version: version,
      pydantic_ai: field(fields, "pydantic_ai"),
      python: field(fields, "python")
    }
  end

  ## What to put in the application

  defp print_usage(venv, installed, extras) do
    cmd = Path.join([venv, "bin", "pynode"])
    app = Mix.Project.config()[:app] || :my_app
    module = app |> Atom.to_string() |> Macro.camelize()
    with_extras = if extras == [], do: "", else: ", extras: #{Enum.join(extras, ",")}"

    Mix.shell().info("""

    pynode #{installed.version} is ready in #{venv}
    (Python #{installed.python}, pydantic-ai-slim #{installed.pydantic_ai}#{with_extras}).

    Start the Python node from your supervision tree:

        {Pynode, name: #{module}.Py, start: [cmd: #{inspect(cmd)}]}

    or keep the path in config (config/runtime.exs, for a release):

        config #{inspect(app)}, :pynode_cmd, #{inspect(cmd)}

        {Pynode, name: #{module}.Py, start: [cmd: Application.fetch_env!(#{inspect(app)}, :pynode_cmd)]}
    #{gitignore_hint(venv)}\
    """)
  end

  # A virtualenv inside the project: the line .gitignore needs, unless it has it.
  defp gitignore_hint(venv) do
    relative = Path.relative_to_cwd(venv)

    if Path.type(relative) == :relative do
      first = relative |> Path.split() |> hd()

      ignored =
        case File.read(".gitignore") do
          {:ok, text} -> String.contains?(text, first)
          {:error, _} -> false
        end

      if ignored, do: "", else: "\nAdd /#{first}/ to .gitignore: the virtualenv is not source.\n"
    else
      ""
    end
  end

  ## Running a tool, its output streamed

  # Runs exe with args, writing its output (stderr too) as it comes; returns the exit status and
  # the last lines, for an error message.
  defp stream_cmd(exe, args) do
    env = [
      {~c"PYTHONUNBUFFERED", ~c"1"},
      {~c"PIP_DISABLE_PIP_VERSION_CHECK", ~c"1"},
      {~c"PIP_NO_INPUT", ~c"1"}
    ]

    port =
      Port.open(
        {:spawn_executable, exe},
        [:binary, :exit_status, :stderr_to_stdout, {:line, 16_384}, args: args, env: env]
      )

    stream_loop(port, [], "")
  end

  defp stream_loop(port, tail, partial) do
    receive do
      {^port, {:data, {:noeol, chunk}}} ->
        write(chunk)
        stream_loop(port, tail, partial <> chunk)

      {^port, {:data, {:eol, chunk}}} ->
        write([chunk, ?\n])
        stream_loop(port, Enum.take([partial <> chunk | tail], @tail_lines), "")

      {^port, {:exit_status, status}} ->
        tail = if partial == "", do: tail, else: [partial | tail]
        {status, tail |> Enum.reverse() |> Enum.join("\n")}
    end
  end

  defp write(data) do
    data = IO.iodata_to_binary(data)

    IO.write(
      if String.valid?(data), do: data, else: for(<<byte <- data>>, into: "", do: ascii(byte))
    )
  end

  defp ascii(byte) when byte < 128, do: <<byte>>
  defp ascii(_byte), do: "?"

  ## Text

  defp split_field(line) do
    case String.split(line, " ", parts: 2) do
      [key, value] -> {key, value}
      [key] -> {key, ""}
    end
  end

  defp field(fields, key), do: Enum.find_value(fields, "", fn {k, v} -> if k == key, do: v end)

  defp last_lines(text, count \\ @tail_lines) do
    text |> String.split("\n", trim: true) |> Enum.take(-count) |> Enum.join("\n")
  end

  defp first_line(text), do: text |> String.split("\n") |> hd()

  defp indent(text), do: text |> String.split("\n") |> Enum.map_join("\n", &("    " <> &1))
end
