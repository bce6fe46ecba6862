import Config

# The agents' model: pydantic-ai's offline "test" model until a real one is named here
# (such as "openai:gpt-4o", with the provider's key in the node's environment).
config :shop, model: "test"

if config_env() == :test do
  # Tests start their own Python node (Pynode.Case), not the application's.
  config :shop, start_pynode: false
  # The Python node logs at this level too.
  config :logger, level: :warning
end
