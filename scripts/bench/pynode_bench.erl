%% The BEAM side of scripts/bench_rtt.py, loaded into its erl nodes (`-pa`) and driven through
%% pynode.testing's control loop, which evaluates each call below and hands back its result.
%%
%% On the echo node:   pynode_bench:start_echo()         the reference gen_server `echo` (ping -> pong)
%% On the bench node:  pynode_bench:seq(Dest, N)         N sequential calls       -> {WallNs, [LatencyNs]}
%%                     pynode_bench:conc(Dest, N, C)     C callers, N div C each  -> {WallNs, [LatencyNs]}
%%                     pynode_bench:info()                                        -> {OtpRelease, Schedulers}
%% Both targets are timed by the same clock and the same callers: the bench node's.
-module(pynode_bench).
-behaviour(gen_server).
-export([start_echo/0, seq/2, conc/3, info/0]).
-export([init/1, handle_call/3, handle_cast/2]).

-ifndef(CALL_TIMEOUT).
-define(CALL_TIMEOUT, 10000).
-endif.

%% Not linked to the evaluation that starts it: it lives as long as its node.
start_echo() ->
    {ok, Pid} = gen_server:start({local, echo}, ?MODULE, [], []),
    Pid.

init([]) -> {ok, nostate}.

handle_call(ping, _From, State) -> {reply, pong, State}.

handle_cast(_Request, State) -> {noreply, State}.

seq(Dest, N) ->
    T0 = erlang:monotonic_time(),
    Latencies = calls(Dest, N, []),
    {ns(erlang:monotonic_time() - T0), [ns(L) || L <- Latencies]}.

%% Each caller waits for `go`, so spawning them is not timed; its samples come back as its exit reason.
conc(Dest, N, C) ->
    Each = max(1, N div C),
    Callers = [spawn_monitor(fun() -> receive go -> exit({done, calls(Dest, Each, [])}) end end)
               || _ <- lists:seq(1, C)],
    T0 = erlang:monotonic_time(),
    [Pid ! go || {Pid, _} <- Callers],
    Samples = [await(Pid, Ref) || {Pid, Ref} <- Callers],
    Wall = erlang:monotonic_time() - T0,
    {ns(Wall), [ns(L) || L <- lists:append(Samples)]}.

info() ->
    {list_to_binary(erlang:system_info(otp_release)), erlang:system_info(schedulers_online)}.

calls(_Dest, 0, Acc) ->
    Acc;
calls(Dest, K, Acc) ->
    T0 = erlang:monotonic_time(),
    pong = gen_server:call(Dest, ping, ?CALL_TIMEOUT),
    calls(Dest, K - 1, [erlang:monotonic_time() - T0 | Acc]).

await(Pid, Ref) ->
    receive
        {'DOWN', Ref, process, Pid, {done, Latencies}} -> Latencies;
        {'DOWN', Ref, process, Pid, Other} -> error({caller_failed, Other})
    after 600000 ->
        error(caller_timeout)
    end.

ns(Native) -> erlang:convert_time_unit(Native, native, nanosecond).
