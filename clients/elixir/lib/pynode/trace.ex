defmodule Pynode.Trace do
  @moduledoc false
  # The run options :trace and :trace_context (see Pynode.run/3): the caller's OpenTelemetry
  # context, handed to the node as its run option trace_context (docs/protocol.md section 4), so
  # that the run's spans on the Python node are children of the caller's span.
  #
  # The library does not depend on OpenTelemetry: `trace: true` injects the context only when the
  # application has :otel_propagator_text_map (the opentelemetry_api package), and does nothing
  # otherwise.

  @doc false
  # The options with :trace resolved: a `:trace_context` given stays as it is; else, with
  # `trace: true` (or `config :pynode, trace: true`), the current context's text map, when there
  # is one to inject.
  @spec options(keyword()) :: keyword()
  def options(opts) do
    {trace, opts} = Keyword.pop(opts, :trace)

    cond do
      Keyword.has_key?(opts, :trace_context) -> opts
      trace?(trace) -> inject(opts)
      true -> opts
    end
  end

  defp trace?(nil), do: Application.get_env(:pynode, :trace, false) == true
  defp trace?(trace) when is_boolean(trace), do: trace

  defp trace?(other),
    do: raise(ArgumentError, "trace: must be true or false, got: #{inspect(other)}")

  defp inject(opts) do
    if Code.ensure_loaded?(:otel_propagator_text_map) do
      case apply(:otel_propagator_text_map, :inject, [[]]) do
        [] -> opts
        carrier when is_list(carrier) -> Keyword.put(opts, :trace_context, carrier)
        _other -> opts
      end
    else
      opts
    end
  end
end
