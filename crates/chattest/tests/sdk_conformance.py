"""Drives the provider emulator with the official Python SDKs (`anthropic`, `openai`) and
prints what they parsed as JSON, one object per scenario, for the Rust test to compare.

Usage: python sdk_conformance.py <emulator base URL> <scenario>...
Scenarios are answered by the emulator's script in order.
"""

import json
import sys

import anthropic
import openai


def anthropic_turn(base):
    client = anthropic.Anthropic(base_url=base, api_key="sk-test", max_retries=0)
    with client.messages.stream(
        model="emulated", max_tokens=256, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        message = stream.get_final_message()
    return {
        "text": "".join(b.text for b in message.content if b.type == "text"),
        "reasoning": "".join(b.thinking for b in message.content if b.type == "thinking"),
        "tool_calls": [[b.id, b.name, json.dumps(b.input, separators=(",", ":"))] for b in message.content if b.type == "tool_use"],
        "finish": message.stop_reason,
        "usage": [message.usage.input_tokens, message.usage.output_tokens],
    }


def openai_turn(base):
    client = openai.OpenAI(base_url=base + "/v1", api_key="sk-test", max_retries=0)
    stream = client.chat.completions.create(
        model="emulated",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, reasoning, calls, finish, usage = "", "", {}, None, None
    for chunk in stream:
        if chunk.usage:
            usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens]
        for choice in chunk.choices:
            delta = choice.delta
            text += delta.content or ""
            reasoning += getattr(delta, "reasoning_content", None) or ""
            for call in delta.tool_calls or []:
                entry = calls.setdefault(call.index, ["", "", ""])
                if call.id:
                    entry[0] = call.id
                if call.function and call.function.name:
                    entry[1] = call.function.name
                if call.function and call.function.arguments:
                    entry[2] += call.function.arguments
            if choice.finish_reason:
                finish = choice.finish_reason
    return {
        "text": text,
        "reasoning": reasoning,
        "tool_calls": [calls[i] for i in sorted(calls)],
        "finish": finish,
        "usage": usage,
    }


def expect_error(call):
    try:
        call()
    except (anthropic.APIError, openai.APIError) as err:
        status = getattr(err, "status_code", None)
        return {"error": type(err).__name__, "status": status, "message": str(err)}
    return {"error": None}


SCENARIOS = {
    "anthropic": anthropic_turn,
    "openai": openai_turn,
    "anthropic-error": lambda base: expect_error(lambda: anthropic_turn(base)),
    "openai-error": lambda base: expect_error(lambda: openai_turn(base)),
}

if __name__ == "__main__":
    base_url = sys.argv[1]
    for name in sys.argv[2:]:
        print(json.dumps({"scenario": name, **SCENARIOS[name](base_url)}))
