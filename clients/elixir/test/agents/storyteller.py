"""A scripted agent for the Elixir client's tests: it tells a long story one word at a time.

Each word is streamed as its own text delta, 20 ms apart (a few hundred words), so a test can
stop a stream in the middle of a run that is really still going.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

WORDS = [f"word{i} " for i in range(300)]


async def tell(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    await asyncio.sleep(0.02 * len(WORDS))
    return ModelResponse(parts=[TextPart("".join(WORDS))])


async def tell_streamed(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    for word in WORDS:
        await asyncio.sleep(0.02)
        yield word


agent = Agent(FunctionModel(tell, stream_function=tell_streamed))
