defmodule Pynode.ApprovalTest do
  # Tools that wait for a decision (docs/protocol.md sections 4 and 5), against one real Python
  # node for the module. Scripted models make the calls with exact arguments and ids.
  use ExUnit.Case, async: false

  import Pynode.TestSupport
  import Pynode.Test
  alias Pynode.{Approval, Error, Result, Run, Tool}

  defmodule Files do
    # An agent's tool ({M, F}): the node calls it on this node once a call is approved.
    def delete(%{"path" => path}), do: "deleted #{path}"
  end

  setup_all do
    node = unique_node("approval")
    start_supervised!({Pynode, name: ApprovalTest.Py, node: node, start: start_opts()})

    start_supervised!(
      {Pynode.Agent,
       pynode: ApprovalTest.Py,
       name: :approval_files,
       spec: %{model: "test"},
       tools: [
         Tool.new(
           name: "delete_home",
           parameters: [path: [type: :string, required: true]],
           requires_approval: true,
           fun: &Files.delete/1
         )
       ]}
    )

    :ok = Pynode.await_ready(ApprovalTest.Py, 60_000)
    :ok = Pynode.Agent.await_ready(:approval_files, 60_000)
    :ok
  end

  # A run tool that needs approval: it tells the test each time it really runs.
  defp delete_tool(test_pid) do
    Tool.new(
      name: "delete",
      description: "Delete a file",
      parameters: [path: [type: :string, required: true]],
      requires_approval: true,
      fun: fn %{"path" => path} ->
        send(test_pid, {:deleted, path})
        "deleted #{path}"
      end
    )
  end

  # {tool, content} of each tool return in a result's or a model request's messages.
  defp returns(%{messages: messages}),
    do: for(r <- Pynode.Messages.tool_returns(messages), do: {r.name, r.content})

  @run_messages [:pynode_event, :pynode_result, :pynode_approval, :pynode_timeout, :DOWN]

  # The run's messages in the mailbox, classified, until it ends (bounded); the test's own
  # messages ({:deleted, path}) stay.
  defp collect(run, acc \\ []) do
    receive do
      message when is_tuple(message) and elem(message, 0) in @run_messages ->
        case Run.handle_info(message, run) do
          {:done, result} -> {Enum.reverse(acc), {:done, result}}
          {:error, error} -> {Enum.reverse(acc), {:error, error}}
          :unknown -> collect(run, acc)
          other -> collect(run, [other | acc])
        end
    after
      10_000 -> flunk("the run did not end; got #{inspect(Enum.reverse(acc))}")
    end
  end

  defp receive_approval(run) do
    receive do
      {:pynode_approval, _, _} = message ->
        assert {:approval_required, %Approval{} = call} = Run.handle_info(message, run)
        call
    after
      10_000 -> flunk("no approval request")
    end
  end

  test "a tool spec says requires_approval, and only when it is true" do
    gated = Tool.new(name: "t", requires_approval: true, fun: fn _ -> :ok end)
    assert Tool.to_run_spec(gated).requires_approval == true

    refute Map.has_key?(
             Tool.to_run_spec(Tool.new(name: "t", fun: fn _ -> :ok end)),
             :requires_approval
           )

    assert Tool.to_agent_spec(Tool.new(name: "t", requires_approval: true, fun: &Files.delete/1)) ==
             %{
               name: "t",
               parameters: %{
                 "type" => "object",
                 "properties" => %{},
                 "additionalProperties" => false
               },
               handler: {Files, :delete},
               requires_approval: true
             }

    assert_raise ArgumentError, ~r/requires_approval must be a boolean/, fn ->
      Tool.new(name: "t", requires_approval: "yes", fun: fn _ -> :ok end)
    end
  end

  test "start_run: handle_info gives the call, another process approves it, the tool runs" do
    script = script([tool_call("delete", %{path: "a.txt"}, "c1"), text("done")])

    {:ok, run} =
      Pynode.start_run(:approval_files, "Delete a.txt",
        model: script,
        tools: [delete_tool(self())],
        messages_as: :terms
      )

    call = receive_approval(run)
    assert %Approval{name: "delete", args: %{"path" => "a.txt"}} = call
    assert "c1." <> _ = call.call_id
    assert call.run_ref == run.ref and is_pid(call.reply_to)
    # Nothing ran before the decision.
    refute_received {:deleted, _}
    assert length(requests(script)) == 1

    # Any process may decide (a LiveView's, a Task of it, another node's).
    assert :ok = Task.async(fn -> Pynode.approve(call, :approve) end) |> Task.await()

    {seen, {:done, %Result{output: "done", deferred: []} = result}} = collect(run)
    assert_received {:deleted, "a.txt"}
    id = call.call_id
    notice = {:event, {:approval_required, "delete", %{"path" => "a.txt"}, id}}
    decided = {:event, {:approval, id, :approve}}
    # The notice (still in the mailbox: receive_approval/1 took only the request), then the
    # decision.
    assert Enum.find_index(seen, &(&1 == notice)) < Enum.find_index(seen, &(&1 == decided))
    assert {"delete", "deleted a.txt"} in returns(result)

    # The call waits no more: deciding it again is an error value, the run's process is gone.
    assert {:error, %Error{kind: :bad_request, message: message}} = Pynode.approve(call, :deny)
    assert message =~ id
  end

  test "the notice event comes before the request, and approve/3 decides from a run and an id" do
    script = script([tool_call("delete", %{path: "b"}, "c1"), text("ok")])

    {:ok, run} =
      Pynode.start_run(:approval_files, "Delete b", model: script, tools: [delete_tool(self())])

    assert_receive {:pynode_event, _, {:approval_required, "delete", %{"path" => "b"}, id}} =
                     notice,
                   10_000

    assert {:event, {:approval_required, "delete", _, ^id}} = Run.handle_info(notice, run)
    assert %Approval{call_id: ^id} = receive_approval(run)
    # Through the agent, which hands it to the run that waits for the id.
    assert :ok = Pynode.approve(run, id, {:approve, %{path: "c"}})
    {seen, {:done, %Result{output: "ok"}}} = collect(run)
    assert {:event, {:approval, id, {:approve, %{"path" => "c"}}}} in seen
    # The approver's arguments, not the model's.
    assert_received {:deleted, "c"}
    refute_received {:deleted, "b"}
  end

  test "a denial with a message: the tool does not run and the model is told" do
    script = script([tool_call("delete", %{path: "x"}, "c1"), text("kept")])

    {:ok, run} =
      Pynode.start_run(:approval_files, "Delete x",
        model: script,
        tools: [delete_tool(self())],
        events: false
      )

    call = receive_approval(run)
    assert :ok = Pynode.approve(call, {:deny, "x is the user's thesis"})
    assert {[], {:done, %Result{output: "kept"}}} = collect(run)
    refute_received {:deleted, _}
    [_, second] = requests(script)
    assert [{"delete", content}] = returns(second)
    assert content =~ "x is the user's thesis"
  end

  test "a decision that is none of the four raises and sends nothing: the call still waits" do
    script = script([tool_call("delete", %{path: "y"}, "c1"), text("ok")])

    {:ok, run} =
      Pynode.start_run(:approval_files, "Delete y", model: script, tools: [delete_tool(self())])

    call = receive_approval(run)

    for bad <- [:maybe, {:approve, "y"}, {:deny, :no}, "approve"] do
      assert_raise ArgumentError, ~r/a decision must be :approve/, fn ->
        Pynode.approve(call, bad)
      end
    end

    assert :ok = Pynode.approve(call, :deny)
    {_seen, {:done, %Result{output: "ok"}}} = collect(run)
    refute_received {:deleted, _}
  end

  test "stream/3 yields the notice, the call to decide, and the decision, in order" do
    script = script([tool_call("delete", %{path: "s"}, "c1"), text(["Gone", "."])])

    events =
      Pynode.stream(:approval_files, "Delete s", model: script, tools: [delete_tool(self())])
      |> Enum.map(fn
        {:approval_required, %Approval{} = call} = event ->
          # Decided inside the enumeration, by the process that enumerates it.
          :ok = Pynode.approve(call, :approve)
          event

        event ->
          event
      end)

    [call] = for {:approval_required, %Approval{} = call} <- events, do: call
    id = call.call_id

    assert [
             {:tool_call, "delete", %{"path" => "s"}, _},
             {:approval_required, "delete", %{"path" => "s"}, ^id},
             {:approval_required, ^call},
             {:approval, ^id, :approve},
             {:tool_result, "delete", "deleted s", _}
           ] =
             Enum.filter(
               events,
               &(elem(&1, 0) in [:tool_call, :approval_required, :approval, :tool_result])
             )

    assert {:done, %Result{output: "Gone."}} = List.last(events)
    assert_received {:deleted, "s"}
  end

  test "a stream halted while a call waits cancels the run and leaves nothing in the mailbox" do
    script = script([tool_call("delete", %{path: "h"}, "c1"), text("no")])

    assert [{:approval_required, "delete", _, _}] =
             Pynode.stream(:approval_files, "Delete h",
               model: script,
               tools: [delete_tool(self())]
             )
             |> Stream.filter(&match?({:approval_required, _, _, _}, &1))
             |> Enum.take(1)

    refute_received {:pynode_approval, _, _}
    refute_received {:pynode_event, _, _}
    refute_received {:deleted, _}
  end

  test "run/3 defers: the result lists the calls, and resume/4 decides them" do
    script =
      script([
        [tool_call("delete", %{path: "1"}, "c1"), tool_call("delete", %{path: "2"}, "c2")],
        text("one of two")
      ])

    tools = [delete_tool(self())]

    assert {:ok, %Result{output: nil, deferred: deferred} = paused} =
             Pynode.run(:approval_files, "Delete 1 and 2", model: script, tools: tools)

    assert [
             %Approval{call_id: "c1", name: "delete", args: %{"path" => "1"}, reply_to: nil},
             %Approval{call_id: "c2", args: %{"path" => "2"}}
           ] = deferred

    refute_received {:pynode_approval, _, _}
    assert_raise ArgumentError, ~r/resume/, fn -> Pynode.approve(hd(deferred), :approve) end

    # Every deferred call needs a decision, and only those.
    assert_raise ArgumentError, ~r/no decision for the deferred call\(s\) c2/, fn ->
      Pynode.resume(:approval_files, paused, %{"c1" => :approve}, model: script, tools: tools)
    end

    assert_raise ArgumentError, ~r/c9 is not a deferred call/, fn ->
      Pynode.resume(:approval_files, paused, %{"c1" => :approve, "c2" => :deny, "c9" => :deny})
    end

    decisions = [{hd(deferred), :approve}, {"c2", {:deny, "not 2"}}]

    assert {:ok, %Result{output: "one of two", deferred: []} = resumed} =
             Pynode.resume(:approval_files, paused, decisions,
               model: script,
               tools: tools,
               messages_as: :terms
             )

    assert_received {:deleted, "1"}
    refute_received {:deleted, "2"}
    assert [{"delete", "deleted 1"}, {"delete", denied}] = returns(resumed)
    assert denied =~ "not 2"
    # The resumed run asked the model once: the calls were decided from the history.
    assert length(requests(script)) == 2
  end

  test "resume/4 with a function of each call, from a result in the terms form" do
    script =
      script([
        [tool_call("delete", %{path: "keep"}, "k"), tool_call("delete", %{path: "tmp"}, "t")],
        text("tidy")
      ])

    tools = [delete_tool(self())]

    {:ok, paused} =
      Pynode.run(:approval_files, "Tidy", model: script, tools: tools, messages_as: :terms)

    assert is_list(paused.messages)

    decide = fn %Approval{args: %{"path" => path}} ->
      if path == "tmp", do: :approve, else: :deny
    end

    assert {:ok, %Result{output: "tidy"} = resumed} =
             Pynode.resume(:approval_files, paused, decide, model: script, tools: tools)

    # messages_as followed the paused result's form.
    assert is_list(resumed.messages)
    assert_received {:deleted, "tmp"}
    refute_received {:deleted, "keep"}

    assert_raise ArgumentError, ~r/no deferred calls/, fn ->
      Pynode.resume(:approval_files, resumed, %{})
    end
  end

  test "an agent's tool with requires_approval defers a run/3, and resumes" do
    script = script([tool_call("delete_home", %{path: "~/old"}, "h1"), text("cleaned")])

    assert {:ok, %Result{deferred: [%Approval{call_id: "h1", name: "delete_home"}]} = paused} =
             Pynode.run(:approval_files, "Clean", model: script)

    assert {:ok, %Result{output: "cleaned"} = resumed} =
             Pynode.resume(:approval_files, paused, %{"h1" => :approve}, model: script)

    assert returns(resumed) == [{"delete_home", "deleted ~/old"}]
  end

  test "approver: another process gets the raw request, reads it, and decides" do
    script = script([tool_call("delete", %{path: "p"}, "c1"), text("fine")])
    test_pid = self()

    approver =
      spawn_link(fn ->
        receive do
          message ->
            {:ok, %Approval{} = call} = Approval.from_message(message)
            send(test_pid, {:asked, call})
            send(test_pid, {:decided, Pynode.approve(call, :approve)})
        end
      end)

    assert {:ok, %Result{output: "fine"}} =
             Pynode.run(:approval_files, "Delete p",
               model: script,
               tools: [delete_tool(self())],
               approver: approver
             )

    assert_received {:asked, %Approval{name: "delete", args: %{"path" => "p"}}}
    assert_received {:decided, :ok}
    assert_received {:deleted, "p"}
    assert Approval.from_message({:something, :else}) == :unknown
  end

  test "an approver that exits before deciding denies the call; the run ends" do
    script = script([tool_call("delete", %{path: "d"}, "c1"), text("denied")])
    approver = spawn(fn -> receive(do: ({:pynode_approval, _, _} -> exit(:lunch))) end)

    {:ok, run} =
      Pynode.start_run(:approval_files, "Delete d",
        model: script,
        tools: [delete_tool(self())],
        approver: approver,
        messages_as: :terms
      )

    {_seen, {:done, %Result{output: "denied"} = result}} = collect(run)
    assert [{"delete", content}] = returns(result)
    assert content =~ "approver exited" and content =~ "lunch"
    refute_received {:deleted, _}
  end

  test "run/3 cannot be its own approver; bad approver and approvals options raise" do
    tools = [delete_tool(self())]

    assert_raise ArgumentError, ~r/cannot decide/, fn ->
      Pynode.run(:approval_files, "x", tools: tools, approver: self())
    end

    assert_raise ArgumentError, ~r/approver: must be/, fn ->
      Pynode.start_run(:approval_files, "x", approver: "someone")
    end

    assert_raise ArgumentError, ~r/a decision must be/, fn ->
      Pynode.run(:approval_files, "", approvals: %{"c1" => :yes})
    end

    assert {:error, %Error{kind: :bad_request, message: message}} =
             Pynode.run(:approval_files, "", approvals: %{"c9" => :approve})

    assert message =~ "c9"
  end

  test "a run whose call waits past its timeout ends as a timeout, and the call waits no more" do
    script = script([tool_call("delete", %{path: "t"}, "c1"), text("late")])

    {:ok, run} =
      Pynode.start_run(:approval_files, "Delete t",
        model: script,
        tools: [delete_tool(self())],
        timeout: 1_000,
        events: false
      )

    call = receive_approval(run)
    assert {[], {:error, %Error{kind: :timeout}}} = collect(run)
    assert {:error, %Error{kind: :bad_request}} = Pynode.approve(call, :approve)
    refute_received {:deleted, _}
  end

  defmodule Reviewer do
    # A LiveView's shape: mount starts the run, handle_info keeps the calls that wait, a click
    # (handle_call standing in for handle_event) decides one.
    use GenServer

    def start_link(args), do: GenServer.start_link(__MODULE__, args)
    def pending(pid), do: GenServer.call(pid, :pending)
    def click(pid, call_id, decision), do: GenServer.call(pid, {:click, call_id, decision})
    def result(pid), do: GenServer.call(pid, :result)

    @impl true
    def init({prompt, opts}) do
      {:ok, run} = Pynode.start_run(:approval_files, prompt, opts)
      {:ok, %{run: run, pending: %{}, log: [], result: nil}}
    end

    @impl true
    def handle_call(:pending, _from, state), do: {:reply, Map.values(state.pending), state}
    def handle_call(:result, _from, state), do: {:reply, {state.result, state.log}, state}

    def handle_call({:click, id, decision}, _from, state) do
      {call, pending} = Map.pop(state.pending, id)
      {:reply, Pynode.approve(call, decision), %{state | pending: pending}}
    end

    @impl true
    def handle_info(message, %{run: run} = state) when run != nil do
      case Pynode.Run.handle_info(message, run) do
        {:approval_required, call} ->
          {:noreply, put_in(state.pending[call.call_id], call)}

        {:event, {:approval, id, decision}} ->
          {:noreply, %{state | log: state.log ++ [{id, decision}]}}

        {:event, _} ->
          {:noreply, state}

        {:done, result} ->
          {:noreply, %{state | run: nil, result: result}}

        {:error, error} ->
          {:noreply, %{state | run: nil, result: error}}

        :unknown ->
          {:noreply, state}
      end
    end

    def handle_info(_message, state), do: {:noreply, state}
  end

  test "a LiveView-shaped process keeps the waiting calls and decides them on a click" do
    script =
      script([
        [tool_call("delete", %{path: "l1"}, "c1"), tool_call("delete", %{path: "l2"}, "c2")],
        text("half")
      ])

    {:ok, view} =
      Reviewer.start_link({"Delete l1, l2", model: script, tools: [delete_tool(self())]})

    calls = eventually(fn -> match?([_, _], Reviewer.pending(view)) && Reviewer.pending(view) end)
    assert [%Approval{}, %Approval{}] = calls
    by_path = Map.new(calls, &{&1.args["path"], &1.call_id})
    assert :ok = Reviewer.click(view, by_path["l2"], {:deny, "no"})
    assert :ok = Reviewer.click(view, by_path["l1"], :approve)

    {%Result{output: "half"}, log} =
      eventually(fn -> match?({%Result{}, _}, Reviewer.result(view)) && Reviewer.result(view) end)

    assert Enum.sort(log) ==
             Enum.sort([{by_path["l1"], :approve}, {by_path["l2"], {:deny, "no"}}])

    assert_received {:deleted, "l1"}
    refute_received {:deleted, "l2"}
  end
end
