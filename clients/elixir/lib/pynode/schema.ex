defmodule Pynode.Schema do
  @moduledoc """
  Parameter and output specs as keyword lists, turned into JSON Schema.

  A spec is a keyword list of fields. Each field is a type, or a keyword list with
  `:type` and optionally `:required` (default `false`), `:doc` (its description) and `:default`.

  ## Types

    * `:string`, `:integer`, `:number`, `:boolean`
    * `:map` - any object
    * `{:list, type}` - a list of `type`
    * `{:map, spec}` - an object with the fields of `spec`
    * `{:enum, values}` - one of `values` (strings, numbers or atoms; atoms become strings)

  A map is taken to be a JSON Schema already and is passed on unchanged.

  ## Examples

      iex> Pynode.Schema.to_json_schema(city: [type: :string, required: true, doc: "A city name"])
      %{
        "additionalProperties" => false,
        "properties" => %{"city" => %{"description" => "A city name", "type" => "string"}},
        "required" => ["city"],
        "type" => "object"
      }

      iex> Pynode.Schema.to_json_schema(days: {:list, :integer}, unit: {:enum, [:c, :f]})
      %{
        "additionalProperties" => false,
        "properties" => %{
          "days" => %{"items" => %{"type" => "integer"}, "type" => "array"},
          "unit" => %{"enum" => ["c", "f"], "type" => "string"}
        },
        "type" => "object"
      }

      iex> Pynode.Schema.to_json_schema(%{"type" => "object"})
      %{"type" => "object"}
  """

  @typedoc "A field's type."
  @type type ::
          :string
          | :integer
          | :number
          | :boolean
          | :map
          | {:list, type()}
          | {:map, spec()}
          | {:enum, [String.t() | number() | atom()]}

  @typedoc "A field: its type, or its type with `:required`, `:doc` and `:default`."
  @type field :: type() | [type: type(), required: boolean(), doc: String.t(), default: term()]

  @typedoc "A keyword spec of fields."
  @type spec :: [{atom(), field()}]

  @typedoc "A JSON Schema, as a map."
  @type json_schema :: map()

  @doc """
  The JSON Schema of a keyword spec (an object with those fields), or the map itself when given
  a JSON Schema. Raises `ArgumentError` on a field it does not understand.
  """
  @spec to_json_schema(spec() | json_schema()) :: json_schema()
  def to_json_schema(schema) when is_map(schema), do: schema
  def to_json_schema(spec) when is_list(spec), do: object(spec)

  def to_json_schema(other),
    do:
      raise(ArgumentError, "expected a keyword spec or a JSON Schema map, got: #{inspect(other)}")

  defp object(spec) do
    unless Keyword.keyword?(spec) do
      raise ArgumentError, "expected a keyword spec of fields, got: #{inspect(spec)}"
    end

    fields = Enum.map(spec, fn {name, field} -> {Atom.to_string(name), field(name, field)} end)

    schema = %{
      "type" => "object",
      "properties" => Map.new(fields, fn {name, {schema, _required}} -> {name, schema} end),
      "additionalProperties" => false
    }

    case for {name, {_schema, true}} <- fields, do: name do
      [] -> schema
      required -> Map.put(schema, "required", required)
    end
  end

  defp field(name, opts) when is_list(opts) and opts != [] do
    if Keyword.keyword?(opts) and Keyword.has_key?(opts, :type) do
      opts = Keyword.validate!(opts, [:type, :doc, :default, required: false])

      schema =
        opts[:type]
        |> type(name)
        |> put_new("description", opts[:doc])
        |> put_new("default", opts[:default])

      {schema, opts[:required] == true}
    else
      raise ArgumentError,
            "field #{inspect(name)}: expected a type or [type: ...], got: #{inspect(opts)}"
    end
  end

  defp field(name, type), do: {type(type, name), false}

  defp type(:string, _name), do: %{"type" => "string"}
  defp type(:integer, _name), do: %{"type" => "integer"}
  defp type(:number, _name), do: %{"type" => "number"}
  defp type(:boolean, _name), do: %{"type" => "boolean"}
  defp type(:map, _name), do: %{"type" => "object"}
  defp type({:list, item}, name), do: %{"type" => "array", "items" => type(item, name)}
  defp type({:map, spec}, _name) when is_list(spec), do: object(spec)

  defp type({:enum, [_ | _] = values}, name) do
    values = Enum.map(values, &enum_value(&1, name))
    kinds = values |> Enum.map(&json_type/1) |> Enum.uniq()

    case kinds do
      [kind] -> %{"type" => kind, "enum" => values}
      _ -> %{"enum" => values}
    end
  end

  defp type(other, name),
    do: raise(ArgumentError, "field #{inspect(name)}: unknown type #{inspect(other)}")

  defp enum_value(value, _name) when is_binary(value) or is_number(value), do: value
  defp enum_value(value, _name) when is_boolean(value) or is_nil(value), do: value
  defp enum_value(value, _name) when is_atom(value), do: Atom.to_string(value)

  defp enum_value(value, name),
    do: raise(ArgumentError, "field #{inspect(name)}: #{inspect(value)} cannot be an enum value")

  defp json_type(value) when is_binary(value), do: "string"
  defp json_type(value) when is_integer(value), do: "integer"
  defp json_type(value) when is_number(value), do: "number"
  defp json_type(value) when is_boolean(value), do: "boolean"
  defp json_type(nil), do: "null"

  defp put_new(map, _key, nil), do: map
  defp put_new(map, key, value), do: Map.put(map, key, value)
end
