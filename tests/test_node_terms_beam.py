"""Term fidelity through the node: ``{echo, T}`` must come back ``=:=`` T, judged on the BEAM."""

from __future__ import annotations

import asyncio

import pytest
from beam import BeamFactory, BeamNode

from pynode.etf import decode
from pynode.node import Node
from pynode.testing import on_otp

pytestmark = pytest.mark.beam

PY = "'py@127.0.0.1'"

# One Erlang expression per kind of term; evaluated on the BEAM, so pids, refs, ports and
# funs are real ones. `Y` is bound to 3 for the closure.
CORPUS: dict[str, str] = {
    "small ints": "[0, 1, 255, 256, -1, -256, 2147483647, -2147483648, 134217727, -134217728]",
    "big ints": "[2147483648, -2147483649, 1 bsl 64, -(1 bsl 64), (1 bsl 2040) - 1, 1 bsl 2048, -(1 bsl 4000)]",
    "floats": "[0.0, 3.14, -1.5, 1.0e308, -1.0e-308, 5.0e-324, 2.0e-10, float(1 bsl 60)]",
    "atoms": "[ok, '', 'with space', 'Ünïcödé', '日本語', 'emoji 🎉', list_to_atom(lists:duplicate(255, $a))]",
    "special atoms": "[true, false, nil, undefined, 'EXIT', 'DOWN']",
    "unicode atom max": "list_to_atom(lists:duplicate(255, 16#1F600))",
    "binaries": '[<<>>, <<"abc">>, <<"é"/utf8>>, <<255, 0, 1, 128>>, <<0:8000>>, crypto:strong_rand_bytes(70000)]',
    "bitstrings": "[<<1:1>>, <<1, 2, 3:5>>, <<255, 7:3>>, <<0:7>>]",
    "charlists": '["", "hello", [1, 2, 3], [256, 1000, 16#10FFFF], "é", lists:seq(0, 255)]',
    "long list": "lists:seq(1, 70000)",
    "improper lists": "[[1 | 2], [a, b | c], [1 | <<>>], [[] | []], [x | {y}]]",
    "tuples": '[{}, {a}, {1, 2.0, <<"3">>}, list_to_tuple(lists:seq(1, 300)), {{{{nested}}}}]',
    "empty things": '{[], {}, #{}, <<>>, ""}',
    "maps with awkward keys": (
        "#{1 => int, 1.0 => float, [1, 2] => list, #{a => 1} => map, {t, 1} => tuple, "
        '<<"bin">> => bin, "str" => charlist, a => atom, [] => nil, {} => empty_tuple}'
    ),
    "nested maps": '#{a => #{b => #{c => [#{d => {e, #{}}}]}}, <<"k">> => #{1 => #{1.0 => x}}}',
    "big map": "maps:from_list([{I, integer_to_binary(I)} || I <- lists:seq(1, 200)])",
    "pids": "[self(), whereis(init), spawn(fun() -> ok end)]",
    "refs": "[make_ref(), alias(), erlang:monitor(process, self())]",
    # OTP 28 runs a node with one port where OTP 25 has three: a UDP socket makes one more on both
    "ports": "begin {ok, Udp} = gen_udp:open(0, [{ip, {127, 0, 0, 1}}]), [Udp | erlang:ports() -- [Udp]] end",
    "funs": "[fun lists:map/2, fun erlang:'+'/2, fun(X) -> X + Y end, fun() -> ok end]",
    "deep": "lists:foldl(fun(_, Acc) -> [Acc] end, [], lists:seq(1, 200))",
    "mixed": '{ok, [#{<<"k">> => [1.5, -7, "s", {a, <<1:3>>}]}], [a | b], self(), make_ref()}',
}


def _echo_all(corpus: dict[str, str]) -> str:
    """Erlang source: echo every corpus entry (and each element of a list entry); list what differs."""
    entries = ", ".join(f'{{<<"{name}">>, {expr}}}' for name, expr in corpus.items())
    return (
        "Y = 3, "
        f"Corpus = [{entries}], "
        "Items = lists:append([[{N, T} | case T of L when is_list(L), length(L) < 50 -> "
        "[{N, E} || E <- L]; _ -> [] end] || {N, T} <- Corpus]), "
        f"Echo = fun(T) -> catch gen_server:call({{pynode, {PY}}}, {{echo, T}}, 15000) end, "
        "{length(Items), [{N, T, R} || {N, T} <- Items, R <- [Echo(T)], R =/= {ok, T}]}"
    )


@on_otp("25", "28")
async def test_every_kind_of_term_comes_back_equal(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    count, failures = decode(await erl.eval_term(_echo_all(CORPUS), timeout=60))
    assert failures == []
    assert count > 100  # every entry, and each element of the short lists


async def test_term_fidelity_from_elixir(py_node: Node, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    expr = """
    terms = [
      %{"name" => "Zoë", :age => 41, 1 => 1.0, 1.0 => 1, [1] => {}},
      [key: :value, other: "x"],
      {:ok, self(), make_ref(), &Enum.map/2, fn x -> x * 2 end},
      <<1, 2, 3::size(5)>>,
      :"Elixir.Some.Module",
      nil,
      10 ** 100,
      -0.5,
      MapSet.new([1, 2, 3]),
      ~r/regex/
    ]
    Enum.reject(terms, fn t -> GenServer.call({:pynode, :"py@127.0.0.1"}, {:echo, t}) === {:ok, t} end)
    """
    assert await ex.eval(expr, timeout=30) == "[]"


@on_otp("25", "28")
async def test_pids_and_refs_minted_here_come_back_equal(py_node: Node, beam: BeamFactory) -> None:
    """Terms this node made (its pids and refs), sent to the BEAM and echoed back, stay equal."""
    erl = await beam("e1")
    waiting = asyncio.create_task(
        erl.eval(
            "register(rx, self()), receive {T} -> "
            f"{{gen_server:call({{pynode, {PY}}}, {{echo, T}}) =:= {{ok, T}}, length(T)}} "
            "after 10000 -> timeout end"
        )
    )
    await eventually_registered(erl, "rx")
    mine = [py_node.whereis("pynode"), py_node.make_ref(), py_node.name, "text", b"\xff"]
    py_node.send(("rx", "e1@127.0.0.1"), (mine,))
    assert await waiting == "{true,5}"


async def eventually_registered(erl: BeamNode, name: str, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while await erl.eval(f"whereis({name})") == "undefined":
        assert loop.time() < deadline, f"{name} not registered on {erl.name}"
        await asyncio.sleep(0.02)
