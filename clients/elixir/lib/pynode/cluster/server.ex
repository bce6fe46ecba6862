defmodule Pynode.Cluster.Server do
  @moduledoc false
  # The process registered under a cluster's name. It follows each node's Pynode child (its
  # {:pynode, :up | :down, node} events, subscribing again when the child restarts) and the :pg
  # scope (:pg.monitor_scope/1, watching again when the scope restarts; polling on an OTP
  # without it), and tells its own subscribers of both: node events as a Pynode child sends
  # them, and {:pynode, :members, group, pids} for the groups' members on the cluster's nodes.
  # It also answers await_ready and await_members, and drains the nodes it started when the
  # cluster stops.

  use GenServer

  alias Pynode.Cluster

  # While a Pynode child or the scope is not running (between a crash and its restart), it is
  # looked for again this often.
  @rewatch_ms 50
  # How often the scope is read with `membership: :poll` (the default without :pg.monitor_scope/1).
  @poll_ms 200

  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}, shutdown: 10_000}
  end

  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    info = Keyword.fetch!(opts, :info)
    GenServer.start_link(__MODULE__, opts, name: info.name)
  end

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    info = Keyword.fetch!(opts, :info)
    pynodes = Keyword.fetch!(opts, :pynodes)
    {:ok, _} = Registry.register(Pynode.Registry, {:cluster, info.name}, info)

    state = %{
      info: info,
      pynodes: pynodes,
      membership: Keyword.get(opts, :membership, :monitor),
      status: Map.new(pynodes, fn {node, _} -> {node, :down} end),
      child_monitors: %{},
      subscribers: %{},
      ready_waiters: [],
      member_waiters: %{},
      scope_monitor: nil,
      pg_ref: nil,
      groups: %{}
    }

    state = Enum.reduce(pynodes, state, fn {node, _}, state -> watch_child(state, node) end)
    {:ok, watch_scope(state)}
  end

  @impl true
  def handle_call({:subscribe, pid}, _from, state) do
    subscribers = Map.put_new_lazy(state.subscribers, pid, fn -> Process.monitor(pid) end)
    for {node, :up} <- state.status, do: send(pid, {:pynode, :up, node})
    for {group, pids} <- state.groups, do: send(pid, {:pynode, :members, group, pids})
    {:reply, :ok, %{state | subscribers: subscribers}}
  end

  def handle_call({:unsubscribe, pid}, _from, state) do
    {mon, subscribers} = Map.pop(state.subscribers, pid)
    if mon, do: Process.demonitor(mon, [:flush])
    {:reply, :ok, %{state | subscribers: subscribers}}
  end

  def handle_call(:await_ready, from, state) do
    if all_up?(state),
      do: {:reply, :ok, state},
      else: {:noreply, %{state | ready_waiters: [from | state.ready_waiters]}}
  end

  def handle_call({:await_members, group, count, timeout}, from, state) do
    count = if count == :all, do: length(state.info.nodes), else: count

    if enough?(state, group, count) do
      {:reply, :ok, state}
    else
      ref = make_ref()

      timer =
        if timeout != :infinity, do: Process.send_after(self(), {:await_timeout, ref}, timeout)

      waiters = Map.put(state.member_waiters, ref, {from, group, count, timer})
      {:noreply, %{state | member_waiters: waiters}}
    end
  end

  def handle_call(:pynodes, _from, state), do: {:reply, state.pynodes, state}

  # Pynode.Connection's own request, made by code that takes the cluster for a lone Pynode.
  def handle_call(:info, _from, state), do: {:reply, {:cluster, state.info}, state}

  @impl true
  def handle_info({:pynode, event, node}, state) when event in [:up, :down],
    do: {:noreply, set_status(state, node, event)}

  def handle_info({:watch_child, node}, state), do: {:noreply, watch_child(state, node)}
  def handle_info(:watch_scope, state), do: {:noreply, watch_scope(state)}

  def handle_info(:poll_scope, state) do
    Process.send_after(self(), :poll_scope, @poll_ms)
    {:noreply, refresh_all(state)}
  end

  def handle_info({ref, action, group, _pids}, %{pg_ref: ref} = state)
      when action in [:join, :leave],
      do: {:noreply, refresh(state, group)}

  def handle_info({:await_timeout, ref}, state) do
    case Map.pop(state.member_waiters, ref) do
      {{from, _group, _count, _timer}, waiters} ->
        GenServer.reply(from, {:error, :timeout})
        {:noreply, %{state | member_waiters: waiters}}

      {nil, _} ->
        {:noreply, state}
    end
  end

  def handle_info({:DOWN, mon, :process, _pid, _reason}, %{scope_monitor: mon} = state) do
    # The scope is gone, and its members with it: subscribers are told, and it is looked for
    # again until it is back (the nodes find a restarted scope on their own).
    state = %{state | scope_monitor: nil, pg_ref: nil}
    state = Enum.reduce(Map.keys(state.groups), state, &set_members(&2, &1, []))
    Process.send_after(self(), :watch_scope, @rewatch_ms)
    {:noreply, state}
  end

  def handle_info({:DOWN, mon, :process, pid, _reason}, state) do
    case Map.pop(state.child_monitors, mon) do
      {nil, _} ->
        case state.subscribers do
          %{^pid => ^mon} ->
            {:noreply, %{state | subscribers: Map.delete(state.subscribers, pid)}}

          _ ->
            {:noreply, state}
        end

      {node, monitors} ->
        # The node's Pynode child exited (its node with it); its restart is subscribed to again.
        Process.send_after(self(), {:watch_child, node}, @rewatch_ms)
        {:noreply, %{state | child_monitors: monitors} |> set_status(node, :down)}
    end
  end

  def handle_info({:EXIT, _pid, reason}, state), do: {:stop, reason, state}
  def handle_info(_other, state), do: {:noreply, state}

  # The cluster stops: the nodes it started drain together, so that their Pynode children's
  # stops (one after the other) each wait only for what is left of one drain.
  @impl true
  def terminate(reason, %{info: %{started: true}} = state)
      when reason == :shutdown or (is_tuple(reason) and elem(reason, 0) == :shutdown) do
    state.pynodes
    |> Enum.filter(fn {node, _} -> state.status[node] == :up end)
    |> Enum.map(fn {_node, pynode} -> Task.async(fn -> Pynode.drain(pynode, :stop, 5_000) end) end)
    |> Task.yield_many(6_000)

    :ok
  end

  def terminate(_reason, _state), do: :ok

  ## Nodes

  defp watch_child(state, node) do
    {_, child} = List.keyfind(state.pynodes, node, 0)

    with pid when is_pid(pid) <- GenServer.whereis(child),
         mon = Process.monitor(pid),
         :ok <- subscribe(child, mon) do
      %{state | child_monitors: Map.put(state.child_monitors, mon, node)}
    else
      _ ->
        Process.send_after(self(), {:watch_child, node}, @rewatch_ms)
        state
    end
  end

  defp subscribe(child, mon) do
    Pynode.subscribe(child)
  catch
    :exit, _ ->
      Process.demonitor(mon, [:flush])
      :error
  end

  defp set_status(state, node, status) do
    if Map.get(state.status, node, status) == status do
      state
    else
      notify(state, {:pynode, status, node})
      state = %{state | status: Map.put(state.status, node, status)}

      if status == :up and all_up?(state) do
        for from <- state.ready_waiters, do: GenServer.reply(from, :ok)
        %{state | ready_waiters: []}
      else
        state
      end
    end
  end

  defp all_up?(state), do: Enum.all?(state.status, fn {_, status} -> status == :up end)

  ## The scope

  defp watch_scope(%{info: %{scope: scope}} = state) do
    if state.membership == :monitor do
      with pid when is_pid(pid) <- Process.whereis(scope),
           mon = Process.monitor(pid),
           {:ok, {ref, groups}} <- monitor_scope(scope, mon) do
        state = %{state | scope_monitor: mon, pg_ref: ref}
        groups = Enum.uniq(Map.keys(groups) ++ Map.keys(state.groups))
        Enum.reduce(groups, state, &refresh(&2, &1))
      else
        _ ->
          Process.send_after(self(), :watch_scope, @rewatch_ms)
          state
      end
    else
      send(self(), :poll_scope)
      state
    end
  end

  defp monitor_scope(scope, mon) do
    {:ok, :pg.monitor_scope(scope)}
  catch
    :exit, _ ->
      Process.demonitor(mon, [:flush])
      :error
  end

  defp refresh_all(state) do
    groups =
      try do
        :pg.which_groups(state.info.scope)
      rescue
        ArgumentError -> []
      end

    Enum.reduce(Enum.uniq(groups ++ Map.keys(state.groups)), state, &refresh(&2, &1))
  end

  defp refresh(state, group), do: set_members(state, group, Cluster.members_of(state.info, group))

  defp set_members(state, group, pids) do
    if Map.get(state.groups, group, []) == pids do
      state
    else
      notify(state, {:pynode, :members, group, pids})

      groups =
        if pids == [],
          do: Map.delete(state.groups, group),
          else: Map.put(state.groups, group, pids)

      check_member_waiters(%{state | groups: groups}, group)
    end
  end

  defp enough?(state, group, count) do
    nodes = state.groups |> Map.get(group, []) |> Enum.map(&node/1) |> Enum.uniq()
    length(nodes) >= count
  end

  defp check_member_waiters(state, group) do
    waiters =
      Map.filter(state.member_waiters, fn
        {_ref, {from, ^group, count, timer}} ->
          if enough?(state, group, count) do
            if timer, do: Process.cancel_timer(timer)
            GenServer.reply(from, :ok)
            false
          else
            true
          end

        _other ->
          true
      end)

    %{state | member_waiters: waiters}
  end

  defp notify(state, message), do: for({pid, _} <- state.subscribers, do: send(pid, message))
end
