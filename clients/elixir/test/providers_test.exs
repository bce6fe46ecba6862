defmodule Pynode.ProvidersTest do
  # Provider models over real HTTP: each test starts the repo's scripted provider server
  # (`python -m pynode.testing.fake_provider`, as an ExUnit suite of an app would) and runs agents
  # whose model map points at it.
  use ExUnit.Case, async: false

  import Pynode.TestSupport
  alias Pynode.{Error, Result, Tool}

  @key "sk-exunit-5b0c9e2f41"

  defmodule Stock do
    def count(%{"item" => item}), do: %{"item" => item, "count" => 42}
  end

  setup_all do
    start_supervised!(
      {Pynode, name: ProvidersTest.Py, node: unique_node("prov"), start: start_opts()}
    )

    :ok = Pynode.await_ready(ProvidersTest.Py, 60_000)
    :ok
  end

  # A fake provider answering the turns of `script_json` in order (then echoing), on a free port; its URL.
  defp fake_provider(script_json) do
    script =
      Path.join(System.tmp_dir!(), "pynode-script-#{System.unique_integer([:positive])}.json")

    File.write!(script, script_json)
    python = Path.join(root(), ".venv/bin/python")

    port =
      Port.open({:spawn_executable, python}, [
        :binary,
        {:line, 1024},
        args: ["-m", "pynode.testing.fake_provider", "--port", "0", "--script", script]
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)

    on_exit(fn ->
      System.cmd("kill", ["#{os_pid}"])
      File.rm(script)
    end)

    receive do
      {^port, {:data, {:eol, "http://" <> _ = url}}} -> url
    after
      30_000 -> flunk("the fake provider printed no URL")
    end
  end

  defp openai(url),
    do: %{provider: :openai, name: "gpt-4o", base_url: url <> "/v1", api: :chat, api_key: @key}

  test "an agent on a provider model calls an Elixir tool and answers with the provider's text" do
    url = fake_provider(~s([
        {"tool_calls": [{"name": "stock", "args": {"item": "bolts"}}], "input_tokens": 20, "output_tokens": 5},
        {"text": "There are 42 bolts.", "input_tokens": 40, "output_tokens": 6}
      ]))

    start_supervised!(
      {Pynode.Agent,
       pynode: ProvidersTest.Py,
       name: :provider_clerk,
       spec: %{model: openai(url)},
       tools: [
         Tool.new(
           name: "stock",
           parameters: [item: [type: :string, required: true]],
           fun: &Stock.count/1
         )
       ]}
    )

    :ok = Pynode.Agent.await_ready(:provider_clerk, 60_000)

    assert {:ok, %Result{output: "There are 42 bolts.", usage: usage}} =
             Pynode.run(:provider_clerk, "Bolts?")

    assert %{requests: 2, tool_calls: 1, input_tokens: 60, output_tokens: 11} = usage
  end

  test "a streamed run on a run's own model reassembles the provider's chunks exactly" do
    text = "Streamed from the provider, a few characters at a time."
    url = fake_provider(~s([{"text": "#{text}", "chunk_chars": 3}]))

    start_supervised!(
      {Pynode.Agent, pynode: ProvidersTest.Py, name: :provider_plain, spec: %{model: "test"}}
    )

    :ok = Pynode.Agent.await_ready(:provider_plain, 60_000)
    events = Pynode.stream(:provider_plain, "Go", model: openai(url)) |> Enum.to_list()
    {deltas, [{:done, %Result{output: ^text}}]} = Enum.split(events, -1)
    assert Enum.map_join(deltas, fn {:text_delta, chunk} -> chunk end) == text
    assert length(deltas) > 10
  end

  test "a refused key is :auth_failed with the provider's words, never the key" do
    url = fake_provider(~s([{"status": 401, "error": "Incorrect API key provided: #{@key}"}]))

    start_supervised!(
      {Pynode.Agent,
       pynode: ProvidersTest.Py, name: :provider_locked, spec: %{model: openai(url)}}
    )

    :ok = Pynode.Agent.await_ready(:provider_locked, 60_000)

    assert {:error, %Error{kind: :auth_failed, message: message}} =
             Pynode.run(:provider_locked, "Hi")

    assert message =~ "Incorrect API key provided"
    refute message =~ @key
  end
end
