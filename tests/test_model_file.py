"""The ``--models`` file: what it gives, and the line it names when it is wrong."""

from __future__ import annotations

import pytest

from pynode.bridge.model_file import ModelsFileError, parse_models
from pynode.bridge.models import EnvKey, ModelCache, ModelConfig
from pynode.bridge.spec import parse_model
from pynode.etf.types import Atom

GOOD = """\
[models.fast]
provider = "openai"
name = "gpt-4o-mini"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "FAST_KEY"
max_concurrency = 4

[models.fast.settings]
temperature = 0.2

[models.claude]
provider = "anthropic"
name = "claude-sonnet-5-5"
"""


def test_a_file_gives_one_config_per_table_equal_to_the_same_map_from_the_beam() -> None:
    named = parse_models(GOOD)
    assert set(named) == {"fast", "claude"}
    fast = named["fast"]
    assert (fast.provider, fast.name, fast.chosen_api, fast.max_concurrency) == ("openai", "gpt-4o-mini", "chat", 4)
    assert fast.api_key == EnvKey("FAST_KEY")
    assert fast.settings == {"temperature": 0.2}
    from_beam = parse_model(
        "model",
        {
            Atom("provider"): Atom("openai"),
            Atom("name"): b"gpt-4o-mini",
            Atom("base_url"): b"http://127.0.0.1:9/v1",
            Atom("api_key"): (Atom("env"), b"FAST_KEY"),
            Atom("max_concurrency"): 4,
            Atom("settings"): {Atom("temperature"): 0.2},
        },
        "bad_spec",
    )
    assert from_beam == fast  # so both share one model object in the cache
    assert named["claude"] == ModelConfig(provider="anthropic", name="claude-sonnet-5-5")


def test_the_cache_builds_a_named_model_from_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAST_KEY", "sk-file-test-123")
    cache = ModelCache(named=parse_models(GOOD))
    model = cache.get("fast")
    assert model is cache.get("fast")
    assert "gpt-4o-mini" in model.model_name


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("", "models file:", "no models"),
        ('[agents.x]\nname = "y"\n', "models file:1:", "unknown table 'agents'"),
        ('[models.a]\nprovider = "openai"\n', "models file:1:", "needs a name"),
        ('[models.a]\nprovider = "openai"\nname = "x"\n\nmax_concurrency = 0\n', "models file:5:", "at least 1"),
        ('[models.a]\nprovider = "openai"\nname = "x"\napi = "graphql"\n', "models file:4:", "chat or responses"),
        ('[models.a]\nprovider = "openai"\nname = "x"\n\n[models.a.settings]\ntemperature = "hot"\n', "models file:5:",
         "temperature"),
        ('[models.a]\nprovider = "openai"\nname = "x"\n[models.b]\nprovider = "anthropic"\nname = "y"\ncolour = 1\n',
         "models file:7:", "unknown key 'colour'"),
    ],
)  # fmt: skip
def test_a_bad_file_names_its_line(text: str, where: str, says: str) -> None:
    with pytest.raises(ModelsFileError) as raised:
        parse_models(text)
    assert str(raised.value).startswith(where)
    assert says in str(raised.value)
