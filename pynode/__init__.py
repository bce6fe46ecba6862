"""pynode: pydantic-ai agents as named processes in an Erlang cluster."""

__version__ = "0.1.0"
