defmodule Pynode.JSONTest do
  use ExUnit.Case, async: true

  doctest Pynode.JSON

  alias Pynode.JSON

  @fixtures Path.expand("fixtures/messages", __DIR__)

  # The decoder's result for `input`, and the reductions it took: work that a busy machine does not move.
  defp work(input) do
    {:reductions, before} = Process.info(self(), :reductions)
    result = JSON.decode(input)
    {:reductions, later} = Process.info(self(), :reductions)
    {result, later - before}
  end

  defp ok(text) do
    assert {:ok, value} = JSON.decode(text)
    value
  end

  describe "values" do
    test "literals, arrays, objects and whitespace" do
      assert ok("true") == true
      assert ok("false") == false
      assert ok("null") == nil
      assert ok(" \t\r\n[ ] ") == []
      assert ok("{}") == %{}

      assert ok(~s( {"a" : [1, {"b": null}, []], "c": {}} \n)) == %{
               "a" => [1, %{"b" => nil}, []],
               "c" => %{}
             }

      assert ok(~s([[[]], [[], {"": ""}]])) == [[[]], [[], %{"" => ""}]]
    end

    test "the last of duplicate keys wins, as in Python's json" do
      assert ok(~s({"a": 1, "b": 2, "a": 3})) == %{"a" => 3, "b" => 2}
    end

    test "numbers: integers stay integers, a fraction or an exponent makes a float" do
      for {text, value} <- [
            {"0", 0},
            {"-0", 0},
            {"7", 7},
            {"-12", -12},
            {"123456789012345678901234567890", 123_456_789_012_345_678_901_234_567_890},
            {"0.5", 0.5},
            {"-0.0", -0.0},
            {"1e5", 100_000.0},
            {"1E5", 100_000.0},
            {"1e+2", 100.0},
            {"2.5e-3", 0.0025},
            {"-1.5E+07", -1.5e7},
            {"0e0", 0.0},
            {"1e-400", 0.0},
            {"5e-324", 5.0e-324},
            {"1.7976931348623157e308", 1.7976931348623157e308}
          ] do
        decoded = ok(text)
        assert decoded === value, "#{text} decoded as #{inspect(decoded)}"
      end
    end

    test "strings: every escape, surrogate pairs, raw UTF-8" do
      assert ok(~S("\" \\ \/ \b \f \n \r \t")) == "\" \\ / \b \f \n \r \t"
      assert ok(~S("\u0041\u00e9\u20AC\u0000")) == "Aé€\0"
      assert ok(~S("\ud83d\ude00 and \uD834\uDD1E")) == "😀 and 𝄞"
      assert ok(~s("é€😀 \x7F")) == "é€😀 \x7F"
      assert ok(~S("a\nb" )) == "a\nb"
      assert ok(~S({"k\u00e9y": "v"})) == %{"kéy" => "v"}
      assert ok(~S(["\\u0041"])) == ["\\u0041"]
    end

    test "a string without escapes is a part of the input" do
      input = ~s({"text": "#{String.duplicate("x", 100)}"})
      assert %{"text" => text} = ok(input)
      assert text == String.duplicate("x", 100)
    end
  end

  describe "errors say what was expected at which byte" do
    test "syntax" do
      for {text, message} <- [
            {"", "expected a value at byte 0 (end of input)"},
            {"   ", "expected a value at byte 3 (end of input)"},
            {"[1, 2,]", "expected a value at byte 6"},
            {"[1 2]", "expected ',' or ']' at byte 3"},
            {"[1,", "expected a value at byte 3 (end of input)"},
            {"[", "expected a value at byte 1 (end of input)"},
            {~s({"a" 1}), "expected ':' at byte 5"},
            {~s({"a": 1,}), "expected a string (an object's key) at byte 8"},
            {~s({"a": 1 "b": 2}), "expected ',' or '}' at byte 8"},
            {"{1: 2}", "expected a string (an object's key) at byte 1"},
            {"{'a': 1}", "expected a string (an object's key) at byte 1"},
            {~s({"a": }), "expected a value at byte 6"},
            {"tru", "expected a value at byte 0"},
            {"True", "expected a value at byte 0"},
            {"NaN", "expected a value at byte 0"},
            {"Infinity", "expected a value at byte 0"},
            {"-Infinity", "expected a digit at byte 1"},
            {"[undefined]", "expected a value at byte 1"},
            {"\v1", "expected a value at byte 0"}
          ] do
        assert JSON.decode(text) == {:error, message}, "for #{inspect(text)}"
      end
    end

    test "anything after the value" do
      assert JSON.decode("[] x") == {:error, "expected end of input at byte 3"}
      assert JSON.decode("{}{}") == {:error, "expected end of input at byte 2"}
      assert JSON.decode("1 2") == {:error, "expected end of input at byte 2"}
      assert JSON.decode("null\n\0") == {:error, "expected end of input at byte 5"}
      assert JSON.decode("[]\n\n") == {:ok, []}
    end

    test "numbers" do
      for {text, message} <- [
            {"01", "expected end of input at byte 1"},
            {"-", "expected a digit at byte 1 (end of input)"},
            {"-a", "expected a digit at byte 1"},
            {"+1", "expected a value at byte 0"},
            {".5", "expected a value at byte 0"},
            {"1.", "expected a digit after '.' at byte 2 (end of input)"},
            {"1.e3", "expected a digit after '.' at byte 2"},
            {"1e", "expected a digit in the exponent at byte 2 (end of input)"},
            {"[1e+]", "expected a digit in the exponent at byte 4"},
            {"0x10", "expected end of input at byte 1"}
          ] do
        assert JSON.decode(text) == {:error, message}, "for #{inspect(text)}"
      end
    end

    test "strings" do
      for {text, message} <- [
            {~s("abc), "expected '\"' (the string's end) at byte 4 (end of input)"},
            {~s(["a\tb"]),
             "expected '\"' or a character (a control character must be escaped) at byte 3"},
            {~s("a\nb"),
             "expected '\"' or a character (a control character must be escaped) at byte 2"},
            {~S("\x"),
             "expected an escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t, or \\u and four hex digits) at byte 1"},
            {~S("ab\'"),
             "expected an escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t, or \\u and four hex digits) at byte 3"},
            {~S("\u12G4"), "expected four hexadecimal digits after \\u at byte 3"},
            {~S("\u12"), "expected four hexadecimal digits after \\u at byte 3"},
            {~S("\ud83d"),
             "expected a low surrogate (\\uDC00 to \\uDFFF) after the high one at byte 7"},
            {~S("\ud83d\u0041"),
             "expected a low surrogate (\\uDC00 to \\uDFFF) after the high one at byte 7"},
            {~S("\ud83d\ud83d"),
             "expected a low surrogate (\\uDC00 to \\uDFFF) after the high one at byte 7"},
            {~S("x\ude00"),
             "expected a high surrogate (\\uD800 to \\uDBFF) before a low one at byte 2"},
            {"\"\\",
             "expected an escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t, or \\u and four hex digits) at byte 1"}
          ] do
        assert JSON.decode(text) == {:error, message}, "for #{inspect(text)}"
      end
    end

    test "invalid UTF-8, in values and in keys" do
      for {bytes, at} <- [
            {<<0xFF>>, 1},
            # a continuation byte alone, a truncated sequence, at the end too
            {<<0x80>>, 1},
            {<<"ab", 0xC3>>, 3},
            {<<0xE2, 0x82>>, 1},
            # overlong encodings of "/" and of U+0000
            {<<0xC0, 0xAF>>, 1},
            {<<0xE0, 0x80, 0x80>>, 1},
            # an encoded surrogate, and a code point past U+10FFFF
            {<<0xED, 0xA0, 0x80>>, 1},
            {<<0xF4, 0x90, 0x80, 0x80>>, 1},
            {<<"é", 0xF8, 0x88, 0x80, 0x80, 0x80>>, 3}
          ] do
        assert JSON.decode(<<?", bytes::binary, ?">>) ==
                 {:error, "expected valid UTF-8 at byte #{at}"}

        assert JSON.decode(<<"{\"", bytes::binary, "\": 1}">>) ==
                 {:error, "expected valid UTF-8 at byte #{at + 1}"}
      end

      # Outside strings, any byte that starts no value is just unexpected.
      assert JSON.decode(<<"[", 0xFF, "]">>) == {:error, "expected a value at byte 1"}
      # A byte order mark is not whitespace.
      assert JSON.decode(<<0xEF, 0xBB, 0xBF, "[]">>) == {:error, "expected a value at byte 0"}
    end

    test "decode!/1 raises ArgumentError with the message" do
      assert_raise ArgumentError, "invalid JSON: expected a value at byte 1 (end of input)", fn ->
        JSON.decode!("[")
      end
    end
  end

  describe "hostile input" do
    test "nesting is bounded at 512 arrays and objects, however deep the input" do
      assert {:ok, _} = JSON.decode(String.duplicate("[", 512) <> String.duplicate("]", 512))

      assert JSON.decode(String.duplicate("[", 513) <> String.duplicate("]", 513)) ==
               {:error, "expected at most 512 nested arrays and objects at byte 512"}

      objects = String.duplicate(~s({"a":), 513) <> "1" <> String.duplicate("}", 513)

      assert JSON.decode(objects) ==
               {:error, "expected at most 512 nested arrays and objects at byte #{512 * 5}"}

      # Depth counts what is open, not what was opened: many closed containers are fine.
      assert {:ok, list} =
               JSON.decode("[" <> Enum.join(List.duplicate("[[{}]]", 10_000), ",") <> "]")

      assert length(list) == 10_000

      # The decoder stops where the depth runs out: ten million bytes of input cost it about the work
      # of a thousand (a walk over the input would cost millions of reductions).
      {short, short_work} = work(String.duplicate("[", 1_000))
      {long, long_work} = work(String.duplicate("[", 10_000_000))
      assert short == {:error, "expected at most 512 nested arrays and objects at byte 512"}
      assert long == short
      assert long_work < short_work * 10, "#{long_work} reductions against #{short_work}"
    end

    test "integers of at most 4300 digits, floats within a double's range" do
      digits = String.duplicate("9", 4300)
      assert ok(digits) == String.to_integer(digits)
      assert ok("-" <> digits) == -String.to_integer(digits)

      for text <- ["9" <> digits, "-9" <> digits, "[1, 9#{digits}]"] do
        assert {:error, "expected an integer of at most 4300 digits at byte " <> _} =
                 JSON.decode(text)
      end

      # A million digits is refused, not converted (which takes time quadratic in its length): the
      # digits are counted, so ten times as many cost about ten times the work.
      {result, million_work} = work(String.duplicate("7", 1_000_000))
      assert {:error, "expected an integer of at most 4300 digits at byte 0"} = result
      {_, tenth_work} = work(String.duplicate("7", 100_000))
      assert million_work < tenth_work * 20, "#{million_work} reductions against #{tenth_work}"

      for text <- ["1e400", "-1.0e309", "1e999999999999", "[0, 2e308]"] do
        assert {:error, "expected a number within the range of a double at byte " <> _} =
                 JSON.decode(text)
      end

      assert JSON.decode("[0, 2e308]") ==
               {:error, "expected a number within the range of a double at byte 4"}

      # Long fractions and tiny exponents are fine: they round.
      assert ok("0." <> String.duplicate("3", 100_000)) == 0.3333333333333333
      assert ok("1e-999999999999") == 0.0
    end

    test "a 1 MB messages document decodes in milliseconds" do
      doc = File.read!(Path.join(@fixtures, "conversation.json")) |> String.trim()
      copies = div(1_000_000, byte_size(doc)) + 1
      big = "[" <> Enum.join(List.duplicate(doc, copies), ",") <> "]"
      assert byte_size(big) > 1_000_000

      {{:ok, decoded}, big_work} = work(big)
      assert length(decoded) == copies
      assert hd(decoded) == JSON.decode!(doc)
      # Linear in the input: a tenth of the document costs about a tenth of the work (a quadratic
      # decoder's would cost a hundredth).
      tenth = "[" <> Enum.join(List.duplicate(doc, div(copies, 10)), ",") <> "]"
      {{:ok, _}, tenth_work} = work(tenth)
      assert big_work < tenth_work * 20, "#{big_work} reductions against #{tenth_work}"
    end
  end

  describe "against Python's json.dumps" do
    # Random values, dumped by Python twice (ASCII-only with \u escapes, and raw UTF-8 with
    # indentation), with a witness of each leaf that does not go through JSON: a string's UTF-8
    # as hex, an integer as decimal, a float's 64 bits as an integer.
    @python ~S"""
    import json, random, struct, sys
    rng = random.Random(int(sys.argv[1]))
    def text():
        pools = [(0x20, 0x7E), (0, 0x1F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF)]
        chars = []
        for _ in range(rng.randrange(0, 12)):
            low, high = rng.choice(pools)
            chars.append(chr(rng.randint(low, high)))
        chars += rng.sample(['"', '\\', '/', '\n', '\t', '\u2028', '\ufeff'], 2)
        rng.shuffle(chars)
        return ''.join(chars)
    def number():
        kind = rng.randrange(3)
        if kind == 0:
            return rng.randint(-2**64, 2**64)
        if kind == 1:
            return int(''.join(rng.choice('0123456789') for _ in range(rng.randint(1, 4300))) or 0) * rng.choice([1, -1])
        while True:
            f = struct.unpack('<d', struct.pack('<Q', rng.getrandbits(64)))[0]
            if f == f and abs(f) != float('inf'):
                return f
    def value(depth):
        kind = rng.randrange(7 if depth < 4 else 4)
        if kind == 0: return text()
        if kind == 1: return number()
        if kind == 2: return rng.choice([True, False, None])
        if kind == 3: return rng.random() * 10 ** rng.randint(-30, 30)
        if kind in (4, 5): return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {text(): value(depth + 1) for _ in range(rng.randrange(4))}
    def witness(v):
        if isinstance(v, str): return ['s', v.encode('utf-8').hex()]
        if isinstance(v, bool) or v is None: return ['c', v]
        if isinstance(v, int): return ['i', str(v)]
        if isinstance(v, float): return ['f', str(struct.unpack('<q', struct.pack('<d', v))[0])]
        if isinstance(v, list): return ['l', [witness(x) for x in v]]
        return ['o', [[k.encode('utf-8').hex(), witness(x)] for k, x in v.items()]]
    for _ in range(300):
        v = value(0)
        print(json.dumps(v))
        print(json.dumps(v, ensure_ascii=False, indent=2).replace('\n', ' '))
        print(json.dumps(witness(v)))
    """

    defp from_witness(["s", hex]), do: Base.decode16!(hex, case: :lower)
    defp from_witness(["c", constant]), do: constant
    defp from_witness(["i", decimal]), do: String.to_integer(decimal)
    defp from_witness(["f", bits]), do: float_of_bits(String.to_integer(bits))
    defp from_witness(["l", items]), do: Enum.map(items, &from_witness/1)

    defp from_witness(["o", members]),
      do: Map.new(members, fn [key, value] -> {from_witness(["s", key]), from_witness(value)} end)

    defp float_of_bits(bits) do
      <<float::float-64>> = <<bits::signed-64>>
      float
    end

    test "random documents decode to exactly what Python dumped, with or without \\u escapes" do
      python = Path.join(Pynode.TestSupport.root(), ".venv/bin/python")
      seed = Integer.to_string(:erlang.phash2(make_ref()))
      {out, 0} = System.cmd(python, ["-c", @python, seed])
      lines = String.split(out, "\n", trim: true)
      assert length(lines) == 900

      for [ascii, unicode, witness] <- Enum.chunk_every(lines, 3) do
        expected = witness |> JSON.decode!() |> from_witness()
        assert JSON.decode(ascii) == {:ok, expected}, "seed #{seed}: #{ascii}"
        assert JSON.decode(unicode) == {:ok, expected}, "seed #{seed}: #{unicode}"
      end
    end
  end
end
