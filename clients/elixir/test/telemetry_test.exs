# Stand-ins for two libraries the application may have, which these tests cannot fetch (no Hex
# here): `:telemetry` (its documented attach_many/4, detach/1 and execute/3: events go to the
# handlers attached for them) and `:otel_propagator_text_map` of opentelemetry_api (inject/1 adds
# the current span's traceparent to the carrier; the stand-in's "current span" is a value in the
# process dictionary, where OpenTelemetry keeps its context too). Modules are global: both stay
# inert unless a test attaches a handler or sets a span, and every test here (async: false)
# detaches and clears what it set. A project that has the real `:telemetry` would not compile
# this file (the module would be defined twice).
defmodule :telemetry do
  @moduledoc false
  @key {:telemetry_stand_in, :handlers}

  def attach_many(id, events, fun, config) when is_list(events) and is_function(fun, 4) do
    handlers = :persistent_term.get(@key, [])

    if List.keymember?(handlers, id, 0) do
      {:error, :already_exists}
    else
      :persistent_term.put(@key, [{id, events, fun, config} | handlers])
      :ok
    end
  end

  def detach(id) do
    handlers = :persistent_term.get(@key, [])

    if List.keymember?(handlers, id, 0) do
      :persistent_term.put(@key, List.keydelete(handlers, id, 0))
      :ok
    else
      {:error, :not_found}
    end
  end

  def execute(event, measurements, metadata) when is_map(measurements) and is_map(metadata) do
    for {_id, events, fun, config} <- :persistent_term.get(@key, []), event in events do
      fun.(event, measurements, metadata, config)
    end

    :ok
  end
end

defmodule :otel_propagator_text_map do
  @moduledoc false
  def inject(carrier) do
    case Process.get(:otel_stand_in_traceparent) do
      nil -> carrier
      traceparent -> List.keystore(carrier, "traceparent", 0, {"traceparent", traceparent})
    end
  end
end

defmodule Pynode.TelemetryTest do
  # Telemetry events and trace propagation against the real node. The node exports its spans
  # to its stdout (OTEL_TRACES_EXPORTER=console, captured with the log): it traces, so a tool
  # call's context says which trace the node's spans joined.
  use Pynode.Case,
    async: false,
    start: [
      cmd: Pynode.TestSupport.pynode_cmd(),
      env: [{"OTEL_TRACES_EXPORTER", "console"}, {"OTEL_METRICS_EXPORTER", "none"}]
    ]

  alias Pynode.{Error, Result, Tool}

  @run_events [[:pynode, :run, :start], [:pynode, :run, :stop], [:pynode, :run, :exception]]
  @tool_events [[:pynode, :tool, :start], [:pynode, :tool, :stop], [:pynode, :tool, :exception]]
  @node_events [[:pynode, :node, :up], [:pynode, :node, :down]]

  defmodule Tools do
    # An agent's {M, F}/2 tool: tells the test which trace context the node gave it.
    def trace(_args, ctx) do
      send(:pynode_telemetry_test, {:tool_trace_context, ctx.trace_context})
      "traced"
    end
  end

  @doc false
  def forward(event, measurements, metadata, pid),
    do: send(pid, {:telemetry, event, measurements, metadata})

  setup_all do
    # Whether :telemetry is there is found out once per VM: found again, now that it is.
    :persistent_term.erase({Pynode.Telemetry, :telemetry})
    :ok
  end

  setup %{pynode: py, test: test} do
    id = {__MODULE__, test}

    :ok =
      :telemetry.attach_many(id, @run_events ++ @tool_events ++ @node_events, &forward/4, self())

    Process.register(self(), :pynode_telemetry_test)

    on_exit(fn ->
      :telemetry.detach(id)
      Application.delete_env(:pynode, :trace)
    end)

    name = :"tele_#{:erlang.phash2(test)}"

    start_supervised!(
      {Pynode.Agent,
       pynode: py,
       name: name,
       spec: %{model: "test"},
       tools: [Tool.new(name: "trace", parameters: [], fun: &Tools.trace/2)]}
    )

    :ok = Pynode.Agent.await_ready(name, pynode: py, timeout: 30_000)
    %{agent: name, node: Pynode.node_name(py)}
  end

  test "a run's start and stop, with its usage; its Elixir tool's start and stop",
       %{agent: agent, pynode: py, node: node} do
    double = Tool.new(name: "double", parameters: [n: :integer], fun: fn %{"n" => n} -> n * 2 end)
    script = script([tool_call("double", %{n: 21}), text("42")])

    assert {:ok, %Result{output: "42", usage: usage, run_id: run_id}} =
             Pynode.run(agent, "double 21", pynode: py, model: script, tools: [double])

    assert_received {:telemetry, [:pynode, :run, :start], start, started}
    assert %{system_time: system_time, monotonic_time: began} = start
    assert is_integer(system_time) and is_integer(began)

    assert %{agent: ^agent, node: ^node, model: "function", run_id: nil} = started
    span = started.telemetry_span_context
    assert is_reference(span)

    assert_received {:telemetry, [:pynode, :run, :stop], stop, stopped}
    assert stop.duration > 0 and stop.monotonic_time >= began

    assert Map.take(stop, [:input_tokens, :output_tokens, :requests, :tool_calls]) == %{
             input_tokens: usage.input_tokens,
             output_tokens: usage.output_tokens,
             requests: 2,
             tool_calls: 1
           }

    assert usage.input_tokens > 0 and usage.output_tokens > 0

    assert %{agent: ^agent, node: ^node, model: "function", run_id: ^run_id} = stopped
    assert %{telemetry_span_context: ^span, result: %Result{output: "42"}} = stopped
    refute_received {:telemetry, [:pynode, :run, :exception], _, _}

    # The tool's span, from the process that served the run's tools.
    assert_receive {:telemetry, [:pynode, :tool, :start], tool_start, tool_started}, 5_000
    assert %{system_time: _, monotonic_time: _} = tool_start
    assert %{tool: "double", args: %{"n" => 21}, node: ^node, call_id: call_id} = tool_started
    assert is_binary(call_id) and is_reference(tool_started.run_ref)

    assert_receive {:telemetry, [:pynode, :tool, :stop], tool_stop, tool_stopped}, 5_000
    assert tool_stop.duration > 0
    assert %{tool: "double", call_id: ^call_id, result: {:ok, 42}} = tool_stopped

    assert tool_stopped.telemetry_span_context == tool_started.telemetry_span_context
  end

  test "a failing run, a run that times out, a cancelled run and a raising tool emit :exception",
       %{agent: agent, pynode: py, node: node} do
    # The script has no turn for the model's request: its function raises, the run fails.
    assert {:error, %Error{kind: :model_error} = error} =
             Pynode.run(agent, "hi", pynode: py, model: script([]))

    assert_received {:telemetry, [:pynode, :run, :start], _, %{telemetry_span_context: span}}
    assert_received {:telemetry, [:pynode, :run, :exception], exception, failed}
    assert exception.duration > 0 and is_integer(exception.monotonic_time)

    assert %{agent: ^agent, node: ^node, kind: :error, reason: ^error, error: ^error} = failed
    assert %{stacktrace: [], telemetry_span_context: ^span, run_id: nil} = failed
    refute_received {:telemetry, [:pynode, :run, :stop], _, _}

    # A timeout: one :exception, the timeout's (not a cancel's as well).
    slow = fn _messages, _info ->
      Process.sleep(3_000)
      text("late")
    end

    assert {:error, %Error{kind: :timeout}} =
             Pynode.run(agent, "slow", pynode: py, model: script([slow]), timeout: 300)

    assert_received {:telemetry, [:pynode, :run, :start], _, %{telemetry_span_context: span}}

    assert_received {:telemetry, [:pynode, :run, :exception], %{duration: duration},
                     %{telemetry_span_context: ^span, reason: %Error{kind: :timeout}}}

    assert System.convert_time_unit(duration, :native, :millisecond) >= 300
    refute_receive {:telemetry, [:pynode, :run, _], _, %{telemetry_span_context: ^span}}, 200

    # Cancelled by its caller.
    {:ok, run} = Pynode.start_run(agent, "slow", pynode: py, model: script([slow]))
    assert_received {:telemetry, [:pynode, :run, :start], _, %{telemetry_span_context: span}}
    :ok = Pynode.cancel(run)

    assert_received {:telemetry, [:pynode, :run, :exception], _,
                     %{telemetry_span_context: ^span, reason: %Error{kind: :cancelled}}}

    # A tool that raises: its :exception; the model is told and the run goes on to its :stop.
    boom = Tool.new(name: "boom", parameters: [], fun: fn _ -> raise "no luck" end)

    assert {:ok, %Result{output: "sorry"}} =
             Pynode.run(agent, "boom",
               pynode: py,
               model: script([tool_call("boom", %{}), text("sorry")]),
               tools: [boom]
             )

    assert_receive {:telemetry, [:pynode, :tool, :start], _, %{tool: "boom"}}, 5_000
    assert_receive {:telemetry, [:pynode, :tool, :exception], %{duration: _}, raised}, 5_000
    assert %{tool: "boom", kind: :error, reason: %RuntimeError{message: "no luck"}} = raised
    assert [_ | _] = raised.stacktrace
    assert_received {:telemetry, [:pynode, :run, :stop], _, %{result: %Result{output: "sorry"}}}
  end

  test "a run that cannot start emits :start and :exception", %{pynode: py} do
    assert {:error, %Error{kind: :unknown_agent}} =
             Pynode.run({:no_such_agent, Pynode.node_name(py)}, "hi")

    assert_received {:telemetry, [:pynode, :run, :start], _, %{agent: :no_such_agent} = started}
    span = started.telemetry_span_context

    assert_received {:telemetry, [:pynode, :run, :exception], _,
                     %{telemetry_span_context: ^span, error: %Error{kind: :unknown_agent}}}
  end

  test "a node's up and down" do
    node = Pynode.NodeName.unique("tele#{System.unique_integer([:positive])}")

    start_supervised!(
      {Pynode,
       name: TelemetryTest.Second,
       node: node,
       start: [cmd: Pynode.TestSupport.pynode_cmd()],
       backoff_initial: 200}
    )

    :ok = Pynode.await_ready(TelemetryTest.Second, 60_000)

    assert_receive {:telemetry, [:pynode, :node, :up], %{system_time: t},
                    %{node: ^node, pynode: TelemetryTest.Second}},
                   5_000

    assert is_integer(t)

    {_, 0} = System.cmd("kill", ["-9", "#{Pynode.os_pid(TelemetryTest.Second)}"])

    assert_receive {:telemetry, [:pynode, :node, :down], %{system_time: _},
                    %{node: ^node, pynode: TelemetryTest.Second}},
                   30_000

    # Started again by the child, and connected again.
    assert_receive {:telemetry, [:pynode, :node, :up], _, %{node: ^node}}, 60_000
  end

  test "trace: true hands the caller's trace context to the node; the run's spans join it",
       %{agent: agent, pynode: py} do
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    Process.put(:otel_stand_in_traceparent, "00-#{trace_id}-00f067aa0ba902b7-01")
    on_exit(fn -> Process.delete(:otel_stand_in_traceparent) end)
    calls_trace = fn -> script([tool_call("trace", %{}), text("done")]) end

    assert {:ok, _} = Pynode.run(agent, "trace", pynode: py, model: calls_trace.(), trace: true)
    assert_receive {:tool_trace_context, context}, 5_000
    assert joined(context) == trace_id

    # Without trace: true, nothing is sent: the node's spans start a trace of their own.
    assert {:ok, _} = Pynode.run(agent, "trace", pynode: py, model: calls_trace.())
    assert_receive {:tool_trace_context, context}, 5_000
    assert joined(context) not in [nil, trace_id]

    # config :pynode, trace: true: every run.
    Application.put_env(:pynode, :trace, true)
    assert {:ok, _} = Pynode.run(agent, "trace", pynode: py, model: calls_trace.())
    assert_receive {:tool_trace_context, context}, 5_000
    assert joined(context) == trace_id

    # ... unless it says trace: false.
    assert {:ok, _} = Pynode.run(agent, "trace", pynode: py, model: calls_trace.(), trace: false)
    assert_receive {:tool_trace_context, context}, 5_000
    assert joined(context) != trace_id

    # trace_context: given, it goes as it is.
    other = "0af7651916cd43dd8448eb211c80319c"
    given = [{"traceparent", "00-#{other}-b7ad6b7169203331-01"}]

    assert {:ok, _} =
             Pynode.run(agent, "trace", pynode: py, model: calls_trace.(), trace_context: given)

    assert_receive {:tool_trace_context, context}, 5_000
    assert joined(context) == other

    # It reaches the node, which checks it.
    assert {:error, %Error{kind: :bad_request, message: message}} =
             Pynode.run(agent, "trace", pynode: py, model: calls_trace.(), trace_context: [:nope])

    assert message =~ "trace_context"
  end

  # The trace id of the context a tool call got (the node's execute_tool span), nil for none.
  defp joined(context) do
    case List.keyfind(context, "traceparent", 0) do
      {"traceparent", "00-" <> rest} -> rest |> String.split("-") |> hd()
      nil -> nil
    end
  end
end
