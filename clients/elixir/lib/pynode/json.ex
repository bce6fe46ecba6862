defmodule Pynode.JSON do
  @moduledoc false
  # A strict RFC 8259 JSON decoder: the library has no dependencies and Elixir 1.14 has no JSON
  # module.
  #
  # Every step is a tail call that matches the rest of the input at once, so the VM keeps one
  # match context for the whole text, and no function returns a binary to its caller: nesting is
  # an explicit stack (no recursion, so deep input cannot exhaust anything but the depth limit),
  # `original` is the whole text and `skip` the offset of `rest` in it, and a string without
  # escapes is a `binary_part/3` of the original. An error is thrown as {@error, expected, offset}
  # and returned as a message.
  #
  # Stack frames, innermost first: [:array, reversed_elements | _] while in an array,
  # [:key, reversed_members | _] while reading a member's key and its ':', and
  # [:object, key, reversed_members | _] while reading its value. [] is the top level.
  #
  # Limits (RFC 8259, section 9, lets a parser set them): at most @max_depth nested arrays and
  # objects, integers of at most @max_digits digits (the cost of converting one grows with the
  # square of its length; Python's json refuses longer ones too), and numbers that fit a double.

  @max_depth 512
  @max_digits 4300
  @error :pynode_json_error

  @typedoc "A decoded JSON value: maps with binary keys, lists, binaries, numbers, booleans, nil."
  @type value :: %{optional(String.t()) => value} | [value] | String.t() | number | boolean | nil

  @doc """
  Decodes one JSON text.

  Objects become maps with binary keys (the last of duplicate keys wins), arrays lists, strings
  UTF-8 binaries, numbers with neither fraction nor exponent integers and the others floats, `null`
  `nil`. Whitespace may surround the value; anything else after it is an error. An error says
  what was expected at which byte offset (counted from 0).

      iex> Pynode.JSON.decode(~s({"a": [1, 2.5, "\\u00e9", null, true]}))
      {:ok, %{"a" => [1, 2.5, "é", nil, true]}}

      iex> Pynode.JSON.decode("[1, 2,]")
      {:error, "expected a value at byte 6"}
  """
  @spec decode(binary()) :: {:ok, value()} | {:error, String.t()}
  def decode(binary) when is_binary(binary) do
    value(binary, binary, 0, [], 0)
  catch
    {@error, expected, offset} ->
      where = if offset == byte_size(binary), do: " (end of input)", else: ""
      {:error, "expected #{expected} at byte #{offset}#{where}"}
  end

  @doc """
  Decodes one JSON text as `decode/1` does, raising `ArgumentError` with its message on an error.

      iex> Pynode.JSON.decode!("[]")
      []
  """
  @spec decode!(binary()) :: value()
  def decode!(binary) do
    case decode(binary) do
      {:ok, value} -> value
      {:error, message} -> raise ArgumentError, "invalid JSON: " <> message
    end
  end

  @compile {:inline, fail: 2}
  defp fail(expected, offset), do: throw({@error, expected, offset})

  defguardp is_space(c) when c in [?\s, ?\n, ?\r, ?\t]
  defguardp is_digit(c) when c in ?0..?9
  defguardp is_hex(c) when c in ?0..?9 or c in ?a..?f or c in ?A..?F

  # A value, whitespace first.
  defp value(<<c, rest::binary>>, original, skip, stack, depth) when is_space(c),
    do: value(rest, original, skip + 1, stack, depth)

  defp value(<<?", rest::binary>>, original, skip, stack, depth),
    do: string(rest, original, skip + 1, stack, depth, 0)

  defp value(<<?{, rest::binary>>, original, skip, stack, depth) when depth < @max_depth,
    do: object(rest, original, skip + 1, stack, depth + 1)

  defp value(<<?[, rest::binary>>, original, skip, stack, depth) when depth < @max_depth,
    do: array(rest, original, skip + 1, stack, depth + 1)

  defp value(<<c, _::binary>>, _original, skip, _stack, _depth) when c in [?{, ?[],
    do: fail("at most #{@max_depth} nested arrays and objects", skip)

  defp value(<<"true", rest::binary>>, original, skip, stack, depth),
    do: after_value(rest, original, skip + 4, stack, depth, true)

  defp value(<<"false", rest::binary>>, original, skip, stack, depth),
    do: after_value(rest, original, skip + 5, stack, depth, false)

  defp value(<<"null", rest::binary>>, original, skip, stack, depth),
    do: after_value(rest, original, skip + 4, stack, depth, nil)

  defp value(<<?-, rest::binary>>, original, skip, stack, depth),
    do: int_start(rest, original, skip, stack, depth, 1)

  defp value(<<?0, rest::binary>>, original, skip, stack, depth),
    do: after_int(rest, original, skip, stack, depth, 1)

  defp value(<<c, rest::binary>>, original, skip, stack, depth) when c in ?1..?9,
    do: int(rest, original, skip, stack, depth, 1)

  defp value(_rest, _original, skip, _stack, _depth), do: fail("a value", skip)

  # After a value: whitespace, then what its container (the stack's head) allows.
  defp after_value(<<c, rest::binary>>, original, skip, stack, depth, value) when is_space(c),
    do: after_value(rest, original, skip + 1, stack, depth, value)

  defp after_value(<<?,, rest::binary>>, original, skip, [:array, acc | stack], depth, value),
    do: value(rest, original, skip + 1, [:array, [value | acc] | stack], depth)

  defp after_value(<<?], rest::binary>>, original, skip, [:array, acc | stack], depth, value),
    do: after_value(rest, original, skip + 1, stack, depth - 1, :lists.reverse(acc, [value]))

  defp after_value(
         <<?,, rest::binary>>,
         original,
         skip,
         [:object, key, acc | stack],
         depth,
         value
       ),
       do: key(rest, original, skip + 1, [:key, [{key, value} | acc] | stack], depth)

  defp after_value(
         <<?}, rest::binary>>,
         original,
         skip,
         [:object, key, acc | stack],
         depth,
         value
       ) do
    # Reversed back to the text's order, so that the last of duplicate keys wins.
    object = :maps.from_list(:lists.reverse(acc, [{key, value}]))
    after_value(rest, original, skip + 1, stack, depth - 1, object)
  end

  defp after_value(<<>>, _original, _skip, [], _depth, value), do: {:ok, value}
  defp after_value(_rest, _original, skip, [], _depth, _value), do: fail("end of input", skip)

  defp after_value(_rest, _original, skip, [:array | _], _depth, _value),
    do: fail("',' or ']'", skip)

  defp after_value(_rest, _original, skip, [:object | _], _depth, _value),
    do: fail("',' or '}'", skip)

  # After "[": "]", or the first element.
  defp array(<<c, rest::binary>>, original, skip, stack, depth) when is_space(c),
    do: array(rest, original, skip + 1, stack, depth)

  defp array(<<?], rest::binary>>, original, skip, stack, depth),
    do: after_value(rest, original, skip + 1, stack, depth - 1, [])

  defp array(rest, original, skip, stack, depth),
    do: value(rest, original, skip, [:array, [] | stack], depth)

  # After "{": "}", or the first member.
  defp object(<<c, rest::binary>>, original, skip, stack, depth) when is_space(c),
    do: object(rest, original, skip + 1, stack, depth)

  defp object(<<?}, rest::binary>>, original, skip, stack, depth),
    do: after_value(rest, original, skip + 1, stack, depth - 1, %{})

  defp object(rest, original, skip, stack, depth),
    do: key(rest, original, skip, [:key, [] | stack], depth)

  # A member's key, then ':'.
  defp key(<<c, rest::binary>>, original, skip, stack, depth) when is_space(c),
    do: key(rest, original, skip + 1, stack, depth)

  defp key(<<?", rest::binary>>, original, skip, stack, depth),
    do: string(rest, original, skip + 1, stack, depth, 0)

  defp key(_rest, _original, skip, _stack, _depth), do: fail("a string (an object's key)", skip)

  defp colon(<<c, rest::binary>>, original, skip, stack, depth, key) when is_space(c),
    do: colon(rest, original, skip + 1, stack, depth, key)

  defp colon(<<?:, rest::binary>>, original, skip, [:key, acc | stack], depth, key),
    do: value(rest, original, skip + 1, [:object, key, acc | stack], depth)

  defp colon(_rest, _original, skip, _stack, _depth, _key), do: fail("':'", skip)

  # A string after its opening quote, while it has no escape: the characters from `skip`, `len`
  # bytes so far, are the string's bytes. A key when the stack's head is :key.
  defp string(<<?", rest::binary>>, original, skip, [:key | _] = stack, depth, len),
    do: colon(rest, original, skip + len + 1, stack, depth, binary_part(original, skip, len))

  defp string(<<?", rest::binary>>, original, skip, stack, depth, len),
    do:
      after_value(rest, original, skip + len + 1, stack, depth, binary_part(original, skip, len))

  defp string(<<?\\, rest::binary>>, original, skip, stack, depth, len),
    do: escape(rest, original, skip + len, stack, depth, binary_part(original, skip, len))

  defp string(<<c, rest::binary>>, original, skip, stack, depth, len) when c >= 0x20 and c < 0x80,
    do: string(rest, original, skip, stack, depth, len + 1)

  defp string(<<c::utf8, rest::binary>>, original, skip, stack, depth, len) when c >= 0x80,
    do: string(rest, original, skip, stack, depth, len + utf8_size(c))

  defp string(rest, _original, skip, _stack, _depth, len), do: bad_character(rest, skip + len)

  # The same after an escape: `acc` holds the string so far (iodata), the run since the last
  # escape starts at `skip`.
  defp string(<<?", rest::binary>>, original, skip, [:key | _] = stack, depth, len, acc) do
    key = IO.iodata_to_binary([acc | binary_part(original, skip, len)])
    colon(rest, original, skip + len + 1, stack, depth, key)
  end

  defp string(<<?", rest::binary>>, original, skip, stack, depth, len, acc) do
    string = IO.iodata_to_binary([acc | binary_part(original, skip, len)])
    after_value(rest, original, skip + len + 1, stack, depth, string)
  end

  defp string(<<?\\, rest::binary>>, original, skip, stack, depth, len, acc),
    do: escape(rest, original, skip + len, stack, depth, [acc | binary_part(original, skip, len)])

  defp string(<<c, rest::binary>>, original, skip, stack, depth, len, acc)
       when c >= 0x20 and c < 0x80,
       do: string(rest, original, skip, stack, depth, len + 1, acc)

  defp string(<<c::utf8, rest::binary>>, original, skip, stack, depth, len, acc) when c >= 0x80,
    do: string(rest, original, skip, stack, depth, len + utf8_size(c), acc)

  defp string(rest, _original, skip, _stack, _depth, len, _acc),
    do: bad_character(rest, skip + len)

  defp utf8_size(c) when c < 0x800, do: 2
  defp utf8_size(c) when c < 0x10000, do: 3
  defp utf8_size(_), do: 4

  defp bad_character(<<>>, offset), do: fail("'\"' (the string's end)", offset)

  defp bad_character(<<c, _::binary>>, offset) when c < 0x20,
    do: fail("'\"' or a character (a control character must be escaped)", offset)

  defp bad_character(_rest, offset), do: fail("valid UTF-8", offset)

  # After a backslash at `skip`; `acc` is the string before it.
  @escapes [{?", ?"}, {?\\, ?\\}, {?/, ?/}, {?b, ?\b}, {?f, ?\f}, {?n, ?\n}, {?r, ?\r}, {?t, ?\t}]

  for {char, byte} <- @escapes do
    defp escape(<<unquote(char), rest::binary>>, original, skip, stack, depth, acc),
      do: string(rest, original, skip + 2, stack, depth, 0, [acc, unquote(byte)])
  end

  defp escape(<<?u, a, b, c, d, rest::binary>>, original, skip, stack, depth, acc)
       when is_hex(a) and is_hex(b) and is_hex(c) and is_hex(d) do
    case hex(a, b, c, d) do
      high when high in 0xD800..0xDBFF ->
        case rest do
          <<?\\, ?u, a, b, c, d, rest::binary>>
          when is_hex(a) and is_hex(b) and is_hex(c) and is_hex(d) and
                 (a == ?d or a == ?D) and b in [?c, ?d, ?e, ?f, ?C, ?D, ?E, ?F] ->
            code = 0x10000 + Bitwise.bsl(high - 0xD800, 10) + (hex(a, b, c, d) - 0xDC00)
            string(rest, original, skip + 12, stack, depth, 0, [acc | <<code::utf8>>])

          _ ->
            fail("a low surrogate (\\uDC00 to \\uDFFF) after the high one", skip + 6)
        end

      low when low in 0xDC00..0xDFFF ->
        fail("a high surrogate (\\uD800 to \\uDBFF) before a low one", skip)

      code ->
        string(rest, original, skip + 6, stack, depth, 0, [acc | <<code::utf8>>])
    end
  end

  defp escape(<<?u, _::binary>>, _original, skip, _stack, _depth, _acc),
    do: fail("four hexadecimal digits after \\u", skip + 2)

  defp escape(_rest, _original, skip, _stack, _depth, _acc),
    do: fail("an escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t, or \\u and four hex digits)", skip)

  defp hex(a, b, c, d), do: hex(a) * 4096 + hex(b) * 256 + hex(c) * 16 + hex(d)

  defp hex(c) when c <= ?9, do: c - ?0
  defp hex(c) when c <= ?F, do: c - ?A + 10
  defp hex(c), do: c - ?a + 10

  # A number starting at `skip`, `len` bytes read: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  defp int_start(<<?0, rest::binary>>, original, skip, stack, depth, len),
    do: after_int(rest, original, skip, stack, depth, len + 1)

  defp int_start(<<c, rest::binary>>, original, skip, stack, depth, len) when c in ?1..?9,
    do: int(rest, original, skip, stack, depth, len + 1)

  defp int_start(_rest, _original, skip, _stack, _depth, len), do: fail("a digit", skip + len)

  defp int(<<c, rest::binary>>, original, skip, stack, depth, len) when is_digit(c),
    do: int(rest, original, skip, stack, depth, len + 1)

  defp int(rest, original, skip, stack, depth, len),
    do: after_int(rest, original, skip, stack, depth, len)

  defp after_int(<<?., rest::binary>>, original, skip, stack, depth, len),
    do: frac_start(rest, original, skip, stack, depth, len + 1)

  defp after_int(<<e, rest::binary>>, original, skip, stack, depth, len) when e in [?e, ?E],
    do: exp_sign(rest, original, skip, stack, depth, len + 1, len)

  defp after_int(rest, original, skip, stack, depth, len) when len <= @max_digits,
    do: after_value(rest, original, skip + len, stack, depth, integer(original, skip, len))

  defp after_int(rest, original, skip, stack, depth, len) do
    if len - if(:binary.at(original, skip) == ?-, do: 1, else: 0) > @max_digits,
      do: fail("an integer of at most #{@max_digits} digits", skip)

    after_value(rest, original, skip + len, stack, depth, integer(original, skip, len))
  end

  defp integer(original, skip, len),
    do: :erlang.binary_to_integer(binary_part(original, skip, len))

  defp frac_start(<<c, rest::binary>>, original, skip, stack, depth, len) when is_digit(c),
    do: frac(rest, original, skip, stack, depth, len + 1)

  defp frac_start(_rest, _original, skip, _stack, _depth, len),
    do: fail("a digit after '.'", skip + len)

  defp frac(<<c, rest::binary>>, original, skip, stack, depth, len) when is_digit(c),
    do: frac(rest, original, skip, stack, depth, len + 1)

  defp frac(<<e, rest::binary>>, original, skip, stack, depth, len) when e in [?e, ?E],
    do: exp_sign(rest, original, skip, stack, depth, len + 1, nil)

  defp frac(rest, original, skip, stack, depth, len),
    do: float(rest, original, skip, stack, depth, len, binary_part(original, skip, len))

  # `int_len`: the integer part's length when the number has no fraction, else nil.
  defp exp_sign(<<s, rest::binary>>, original, skip, stack, depth, len, int_len)
       when s in [?+, ?-],
       do: exp_start(rest, original, skip, stack, depth, len + 1, int_len)

  defp exp_sign(rest, original, skip, stack, depth, len, int_len),
    do: exp_start(rest, original, skip, stack, depth, len, int_len)

  defp exp_start(<<c, rest::binary>>, original, skip, stack, depth, len, int_len)
       when is_digit(c),
       do: exp(rest, original, skip, stack, depth, len + 1, int_len)

  defp exp_start(_rest, _original, skip, _stack, _depth, len, _int_len),
    do: fail("a digit in the exponent", skip + len)

  defp exp(<<c, rest::binary>>, original, skip, stack, depth, len, int_len) when is_digit(c),
    do: exp(rest, original, skip, stack, depth, len + 1, int_len)

  defp exp(rest, original, skip, stack, depth, len, nil),
    do: float(rest, original, skip, stack, depth, len, binary_part(original, skip, len))

  defp exp(rest, original, skip, stack, depth, len, int_len) do
    # The float parser wants a fraction: "1e5" is read as "1.0e5".
    int = binary_part(original, skip, int_len)
    exp = binary_part(original, skip + int_len + 1, len - int_len - 1)
    float(rest, original, skip, stack, depth, len, <<int::binary, ".0e", exp::binary>>)
  end

  defp float(rest, original, skip, stack, depth, len, text) do
    case float(text) do
      :error -> fail("a number within the range of a double", skip)
      float -> after_value(rest, original, skip + len, stack, depth, float)
    end
  end

  defp float(text) do
    :erlang.binary_to_float(text)
  rescue
    ArgumentError -> :error
  end
end
