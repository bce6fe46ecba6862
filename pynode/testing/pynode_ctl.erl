%% Control loop that pynode's test fixtures start inside every BEAM node they run.
%%
%% The test process (Python) writes one request per line on the node's stdin
%% and reads one answer per line on its stdout. Payloads are base64, and every
%% answer line carries a marker, so whatever else the node prints (logger
%% reports, a stray io:format to `user`) cannot be taken for an answer.
%%
%% Requests:   Id p Base64(Source)   evaluate, answer the printed result
%%             Id t Base64(Source)   evaluate, answer term_to_binary(Result)
%%             Id c Base64(Etf)      the test process calls: {Dest, Request, TimeoutMs}
%%             Id m Base64(Etf)      the test process sends: {Dest, Message}
%%             Id r Base64(Etf)      the test process receives within TimeoutMs
%%             Id k -                kill the evaluation Id (the caller gave up)
%%             Id s -                stop the node (init:stop / System.stop)
%%             Id h -                halt the node at once (erlang:halt(0), output flushed):
%%                                   init:stop spends a second waiting for the `user` process
%% Answers:    MARK 0 ready OsPid OtpRelease Base64(term_to_binary(TestPid))
%%             MARK 0 test Base64(term_to_binary(TestPid))    (a new test process)
%%             MARK Id ok Base64(Payload)
%%             MARK Id err Class Base64(Reason) Base64(Stacktrace) Base64(term_to_binary(Reason))
%%
%% Each evaluation runs in its own monitored process, so an expression that
%% crashes or exits cannot take the loop with it, and several run at once.
%% Those processes get a group leader that copies their output to stderr,
%% which keeps stdout for answers. When stdin closes, the node halts: a test
%% run that dies never leaves a node behind.
%%
%% The test process (registered as pynode_test) is the one long-lived process
%% a test drives: it calls, sends and receives one request at a time, in order,
%% like the process of an ExUnit test. Its mailbox holds what others send it
%% (replies to self(), run events); requests reach it tagged with a reference
%% nobody else has, so no message can pass for one. If it dies (a link), the
%% requests it had fail with its exit reason and a fresh one takes the name.
-module(pynode_ctl).
-export([start/1, script/0]).

-define(MARK, "<<pynode-ctl>> ").

-spec start(erl | elixir) -> pid().
start(Kind) when Kind =:= erl; Kind =:= elixir ->
    spawn(fun() -> init(Kind) end).

-record(ctl, {
    kind :: erl | elixir,
    evals = #{} :: #{pid() => {string(), reference()}},
    key :: reference(),
    test :: pid(),
    test_mref :: reference(),
    asked = [] :: [string()]
}).

init(Kind) ->
    Sink = spawn_link(fun sink/0),
    true = group_leader(Sink, self()),
    Loop = self(),
    spawn_link(fun() -> read_lines(Loop) end),
    State = start_test_process(#ctl{kind = Kind, key = make_ref()}),
    answer(["0 ready ", os:getpid(), " ", erlang:system_info(otp_release), " ", pid_text(State)]),
    loop(State).

loop(#ctl{evals = Evals} = State) ->
    receive
        {line, Line} ->
            loop(request(string:lexemes(Line, [$\s, $\n, $\r, [$\r, $\n]]), State));
        {result, Pid, Reply} ->
            case maps:take(Pid, Evals) of
                {{Id, Mref}, Rest} ->
                    erlang:demonitor(Mref, [flush]),
                    reply(Id, Reply),
                    loop(State#ctl{evals = Rest});
                error ->
                    loop(State)
            end;
        {test_result, Id, Reply} ->
            reply(Id, Reply),
            loop(State#ctl{asked = lists:delete(Id, State#ctl.asked)});
        {'DOWN', Mref, process, _Pid, Reason} when Mref =:= State#ctl.test_mref ->
            [reply(Id, exited(Reason)) || Id <- lists:reverse(State#ctl.asked)],
            Next = start_test_process(State#ctl{asked = []}),
            answer(["0 test ", pid_text(Next)]),
            loop(Next);
        {'DOWN', _Mref, process, Pid, Reason} ->
            case maps:take(Pid, Evals) of
                {{Id, _}, Rest} ->
                    reply(Id, exited(Reason)),
                    loop(State#ctl{evals = Rest});
                error ->
                    loop(State)
            end
    end.

request([Id, Op, Src], #ctl{kind = Kind, evals = Evals} = State) when Op =:= "p"; Op =:= "t" ->
    Loop = self(),
    Source = base64:decode(Src),
    {Pid, Mref} = spawn_monitor(fun() -> Loop ! {result, self(), run(Kind, Op, Source)} end),
    State#ctl{evals = Evals#{Pid => {Id, Mref}}};
request([Id, Op, Arg], #ctl{key = Key, test = Test, asked = Asked} = State)
        when Op =:= "c"; Op =:= "m"; Op =:= "r" ->
    Test ! {Key, Id, Op, base64:decode(Arg)},
    State#ctl{asked = [Id | Asked]};
request([Id, "k", _], #ctl{evals = Evals} = State) ->
    [exit(Pid, kill) || {Pid, {I, _}} <- maps:to_list(Evals), I =:= Id],
    State;
request([_Id, "s", _], #ctl{kind = erl} = State) ->
    init:stop(),
    State;
request([_Id, "s", _], #ctl{kind = elixir} = State) ->
    'Elixir.System':stop(),
    State;
request([_Id, "h", _], State) ->
    erlang:halt(0),
    State;
request(_Other, State) ->
    State.

exited(Reason) ->
    {err, exit, print(Reason), <<>>, Reason}.

pid_text(#ctl{test = Test}) ->
    base64:encode(term_to_binary(Test)).

%% The test process: one request at a time, in the order they came.
start_test_process(#ctl{key = Key} = State) ->
    Loop = self(),
    {Pid, Mref} = spawn_monitor(fun() -> test_loop(Loop, Key) end),
    true = register(pynode_test, Pid),
    State#ctl{test = Pid, test_mref = Mref}.

test_loop(Loop, Key) ->
    receive
        {Key, Id, Op, Arg} ->
            Loop ! {test_result, Id, test_request(Key, Op, Arg)},
            test_loop(Loop, Key)
    end.

test_request(Key, Op, Arg) ->
    try
        {ok, term_to_binary(test_do(Key, Op, binary_to_term(Arg)))}
    catch
        Class:Reason:Stack ->
            {err, Class, print(Reason), print(Stack), Reason}
    end.

test_do(_Key, "c", {Dest, Request, Timeout}) ->
    gen_server:call(Dest, Request, Timeout);
test_do(_Key, "m", {Dest, Message}) ->
    erlang:send(Dest, Message);
test_do(Key, "r", Timeout) ->
    receive
        Message when not (is_tuple(Message) andalso tuple_size(Message) =:= 4
                          andalso element(1, Message) =:= Key) ->
            {message, Message}
    after Timeout ->
        timeout
    end.

run(Kind, Op, Source) ->
    try
        Value = eval(Kind, Source),
        {ok, render(Kind, Op, Value)}
    catch
        Class:Reason:Stack ->
            {err, Class, reason_text(Kind, Class, Reason, Stack), print(Stack), Reason}
    end.

eval(erl, Source) ->
    Text = terminated(unicode:characters_to_list(Source)),
    Tokens =
        case erl_scan:string(Text) of
            {ok, Ts, _} -> Ts;
            {error, ScanError, _} -> error({scan_error, ScanError})
        end,
    Exprs =
        case erl_parse:parse_exprs(Tokens) of
            {ok, Es} -> Es;
            {error, ParseError} -> error({parse_error, ParseError})
        end,
    {value, Value, _} = erl_eval:exprs(Exprs, erl_eval:new_bindings()),
    Value;
eval(elixir, Source) ->
    {Value, _Bindings} = 'Elixir.Code':eval_string(Source),
    Value.

%% Accept an expression with or without its final dot.
terminated(Text) ->
    case string:trim(Text, trailing) of
        [] -> error(empty_expression);
        Trimmed ->
            case lists:last(Trimmed) of
                $. -> Trimmed;
                _ -> Trimmed ++ "\n."
            end
    end.

render(_Kind, "t", Value) ->
    term_to_binary(Value);
render(erl, "p", Value) ->
    print(Value);
render(elixir, "p", Value) ->
    'Elixir.Kernel':inspect(Value, [{limit, infinity}, {printable_limit, infinity}]).

reason_text(erl, _Class, Reason, _Stack) ->
    print(Reason);
reason_text(elixir, Class, Reason, Stack) ->
    'Elixir.Exception':format_banner(Class, Reason, Stack).

%% Terms as `~0tp` prints them on OTP 25: OTP 26 and later print map keys in no
%% particular order unless asked for term order (the `k` modifier, which OTP 25 lacks).
print(Term) ->
    Format =
        case list_to_integer(erlang:system_info(otp_release)) >= 26 of
            true -> "~0tkp";
            false -> "~0tp"
        end,
    fmt(Format, [Term]).

fmt(Format, Args) ->
    unicode:characters_to_binary(io_lib:format(Format, Args)).

reply(Id, {ok, Payload}) ->
    answer([Id, " ok ", base64:encode(Payload)]);
reply(Id, {err, Class, Reason, Stack, Term}) ->
    answer([Id, " err ", atom_to_list(Class), " ", base64:encode(Reason), " ", base64:encode(Stack),
            " ", base64:encode(term_to_binary(Term))]).

%% One io request per answer line, so no other output lands inside it.
answer(Line) ->
    ok = io:put_chars(user, [?MARK, Line, $\n]).

read_lines(Loop) ->
    case io:get_line(user, "") of
        Line when is_list(Line); is_binary(Line) ->
            Loop ! {line, unicode:characters_to_list(Line)},
            read_lines(Loop);
        _EofOrError ->
            erlang:halt(0)
    end.

%% Group leader of the evaluations: their output goes to stderr, input is eof.
sink() ->
    receive
        {io_request, From, ReplyAs, Request} ->
            From ! {io_reply, ReplyAs, io_request(Request)},
            sink();
        _ ->
            sink()
    end.

io_request({put_chars, Encoding, Chars}) ->
    put_stderr(Encoding, Chars);
io_request({put_chars, Encoding, M, F, A}) ->
    put_stderr(Encoding, apply(M, F, A));
io_request({put_chars, Chars}) ->
    put_stderr(latin1, Chars);
io_request({put_chars, M, F, A}) ->
    put_stderr(latin1, apply(M, F, A));
io_request({requests, Requests}) ->
    lists:foldl(fun(R, _) -> io_request(R) end, ok, Requests);
io_request({setopts, _}) ->
    ok;
io_request(getopts) ->
    [{binary, false}, {encoding, unicode}];
io_request({get_geometry, _}) ->
    {error, enotsup};
io_request(Request) when element(1, Request) =:= get_chars;
                         element(1, Request) =:= get_line;
                         element(1, Request) =:= get_until ->
    eof;
io_request(_) ->
    {error, request}.

put_stderr(Encoding, Chars) ->
    case unicode:characters_to_binary(Chars, Encoding, utf8) of
        Bin when is_binary(Bin) -> file:write(standard_error, Bin);
        _ -> {error, badarg}
    end.

%% A scripted model (docs/protocol.md section 3, {function, Fun}) for tests in any language:
%% script() starts a holder of turns and returns it with the model. For each model request the
%% fun takes the next turn (a fun/2 turn is called with the messages and info) and the holder
%% keeps what the request held. The holder answers gen_server calls: {add, Turns}, requests.
-spec script() -> {pid(), {function, fun((list(), map()) -> term())}}.
script() ->
    Holder = spawn(fun() -> script_loop(queue:new(), []) end),
    {Holder, {function, fun(Messages, Info) -> script_turn(Holder, Messages, Info) end}}.

script_turn(Holder, Messages, Info) ->
    case gen_server:call(Holder, {turn, Messages, Info}, infinity) of
        {ok, Turn} when is_function(Turn, 2) -> Turn(Messages, Info);
        {ok, Turn} -> Turn;
        {error, Reason} -> erlang:error(Reason)
    end.

script_loop(Turns, Seen) ->
    receive
        {'$gen_call', From, {add, More}} when is_list(More) ->
            gen_server:reply(From, ok),
            script_loop(queue:join(Turns, queue:from_list(More)), Seen);
        {'$gen_call', From, {turn, Messages, Info}} ->
            Next = [{Messages, Info} | Seen],
            case queue:out(Turns) of
                {{value, Turn}, Rest} ->
                    gen_server:reply(From, {ok, Turn}),
                    script_loop(Rest, Next);
                {empty, _} ->
                    gen_server:reply(From, {error, {script_has_no_turn, length(Next)}}),
                    script_loop(Turns, Next)
            end;
        {'$gen_call', From, requests} ->
            gen_server:reply(From, lists:reverse(Seen)),
            script_loop(Turns, Seen)
    end.
