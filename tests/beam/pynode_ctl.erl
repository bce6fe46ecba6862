%% Control loop that the test suite starts inside every BEAM node it runs.
%%
%% The test process (Python) writes one request per line on the node's stdin
%% and reads one answer per line on its stdout. Payloads are base64, and every
%% answer line carries a marker, so whatever else the node prints (logger
%% reports, a stray io:format to `user`) cannot be taken for an answer.
%%
%% Requests:   Id p Base64(Source)   evaluate, answer the printed result
%%             Id t Base64(Source)   evaluate, answer term_to_binary(Result)
%%             Id k -                kill the evaluation Id (the caller gave up)
%%             Id s -                stop the node (init:stop / System.stop)
%% Answers:    MARK 0 ready OsPid
%%             MARK Id ok Base64(Payload)
%%             MARK Id err Class Base64(Reason) Base64(Stacktrace)
%%
%% Each evaluation runs in its own monitored process, so an expression that
%% crashes or exits cannot take the loop with it, and several run at once.
%% Those processes get a group leader that copies their output to stderr,
%% which keeps stdout for answers. When stdin closes, the node halts: a test
%% run that dies never leaves a node behind.
-module(pynode_ctl).
-export([start/1]).

-define(MARK, "<<pynode-ctl>> ").

-spec start(erl | elixir) -> pid().
start(Kind) when Kind =:= erl; Kind =:= elixir ->
    spawn(fun() -> init(Kind) end).

init(Kind) ->
    Sink = spawn_link(fun sink/0),
    true = group_leader(Sink, self()),
    Loop = self(),
    spawn_link(fun() -> read_lines(Loop) end),
    answer(["0 ready ", os:getpid()]),
    loop(Kind, #{}).

%% Evals: worker pid => {Id, MonitorRef}.
loop(Kind, Evals) ->
    receive
        {line, Line} ->
            loop(Kind, request(Kind, string:lexemes(Line, [$\s, $\n, $\r, [$\r, $\n]]), Evals));
        {result, Pid, Reply} ->
            case maps:take(Pid, Evals) of
                {{Id, Mref}, Rest} ->
                    erlang:demonitor(Mref, [flush]),
                    reply(Id, Reply),
                    loop(Kind, Rest);
                error ->
                    loop(Kind, Evals)
            end;
        {'DOWN', _Mref, process, Pid, Reason} ->
            case maps:take(Pid, Evals) of
                {{Id, _}, Rest} ->
                    reply(Id, {err, exit, fmt("~0tp", [Reason]), <<>>}),
                    loop(Kind, Rest);
                error ->
                    loop(Kind, Evals)
            end
    end.

request(Kind, [Id, Op, Src], Evals) when Op =:= "p"; Op =:= "t" ->
    Loop = self(),
    Source = base64:decode(Src),
    {Pid, Mref} = spawn_monitor(fun() -> Loop ! {result, self(), run(Kind, Op, Source)} end),
    Evals#{Pid => {Id, Mref}};
request(_Kind, [Id, "k", _], Evals) ->
    [exit(Pid, kill) || {Pid, {I, _}} <- maps:to_list(Evals), I =:= Id],
    Evals;
request(erl, [_Id, "s", _], Evals) ->
    init:stop(),
    Evals;
request(elixir, [_Id, "s", _], Evals) ->
    'Elixir.System':stop(),
    Evals;
request(_Kind, _Other, Evals) ->
    Evals.

run(Kind, Op, Source) ->
    try
        Value = eval(Kind, Source),
        {ok, render(Kind, Op, Value)}
    catch
        Class:Reason:Stack ->
            {err, Class, reason_text(Kind, Class, Reason, Stack), fmt("~0tp", [Stack])}
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
    fmt("~0tp", [Value]);
render(elixir, "p", Value) ->
    'Elixir.Kernel':inspect(Value, [{limit, infinity}, {printable_limit, infinity}]).

reason_text(erl, _Class, Reason, _Stack) ->
    fmt("~0tp", [Reason]);
reason_text(elixir, Class, Reason, Stack) ->
    'Elixir.Exception':format_banner(Class, Reason, Stack).

fmt(Format, Args) ->
    unicode:characters_to_binary(io_lib:format(Format, Args)).

reply(Id, {ok, Payload}) ->
    answer([Id, " ok ", base64:encode(Payload)]);
reply(Id, {err, Class, Reason, Stack}) ->
    answer([Id, " err ", atom_to_list(Class), " ", base64:encode(Reason), " ", base64:encode(Stack)]).

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
