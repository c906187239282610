"""The official SDKs against `keysim mock`: generate, stream, count tokens, list models, and
the 429 a client sees when a project's quota runs out.

Usage: python3 check_sdks.py BASE_URL KEY
The fake must serve a project with RPM 2 for `gemini-2.5-flash` owning KEY (the test
starts it with such a scenario). Exits non-zero with a message on the first failure.
"""

import sys

from google import genai
from google.genai import errors, types
import openai

from checks import check

base, key = sys.argv[1], sys.argv[2]
MODEL = "gemini-2.5-flash"



client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base, api_version="v1beta"))

# countTokens is free: it does not use the minute's quota.
n = client.models.count_tokens(model=MODEL, contents="abcdefghijklmnop")
check(n.total_tokens == 4, f"count_tokens: 16 characters are 4 tokens (got {n.total_tokens})")

models = list(client.models.list())
check(any(m.name == f"models/{MODEL}" for m in models), "models.list names the scenario's model")

r = client.models.generate_content(
    model=MODEL,
    contents="Explain how AI works in a few words",
    config=types.GenerateContentConfig(max_output_tokens=25),
)
u = r.usage_metadata
check(u.prompt_token_count == 9, f"generate_content: usage_metadata.prompt_token_count (got {u.prompt_token_count})")
check(u.candidates_token_count == 25, f"generate_content: capped at max_output_tokens (got {u.candidates_token_count})")
check(r.text.startswith("tok"), "generate_content: response.text")
check(str(r.candidates[0].finish_reason).endswith("MAX_TOKENS"), "generate_content: finish_reason MAX_TOKENS")

chunks = list(client.models.generate_content_stream(model=MODEL, contents="stream this please"))
check(len(chunks) >= 2, f"generate_content_stream: several chunks (got {len(chunks)})")
check(chunks[-1].usage_metadata.candidates_token_count > 0, "generate_content_stream: final usage")
check("".join(c.text or "" for c in chunks).startswith("tok"), "generate_content_stream: text")

# JSON mode: the answer matches the schema, and the SDK parses it into the type.
import pydantic


class Recipe(pydantic.BaseModel):
    name: str
    minutes: int
    ingredients: list[str]


PRO = "gemini-2.5-pro"
r = client.models.generate_content(
    model=PRO,
    contents="A recipe, please",
    config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=Recipe),
)
check(isinstance(r.parsed, Recipe), f"response_schema: .parsed is a Recipe ({r.parsed!r})")

# Function calling with mode ANY: the answer is a call the SDK exposes.
weather = types.FunctionDeclaration(
    name="get_weather",
    description="The weather in a city",
    parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")}, required=["city"]),
)
r = client.models.generate_content(
    model=PRO,
    contents="Weather in Paris?",
    config=types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[weather])],
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY")),
    ),
)
calls = r.function_calls or []
check(len(calls) == 1 and calls[0].name == "get_weather" and "city" in calls[0].args, f"function call ({calls})")

# Several candidates, and an image's tokens.
r = client.models.generate_content(model=PRO, contents="hi", config=types.GenerateContentConfig(candidate_count=2))
check(len(r.candidates) == 2, f"candidate_count 2 ({len(r.candidates)})")
png = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6300010000050001"
                    "0d0a2db40000000049454e44ae426082")
n = client.models.count_tokens(model=PRO, contents=[types.Part.from_bytes(data=png, mime_type="image/png")])
check(n.total_tokens == 258, f"count_tokens of an image: 258 (got {n.total_tokens})")

# Embeddings: a model of their own, with limits of their own.
EMBED = "gemini-embedding-001"
e = client.models.embed_content(model=EMBED, contents=["first text", "second text"])
check(len(e.embeddings) == 2 and len(e.embeddings[0].values) == 3072, "embed_content: two vectors of 3072")
e = client.models.embed_content(
    model=EMBED, contents="one text", config=types.EmbedContentConfig(output_dimensionality=256)
)
check(len(e.embeddings[0].values) == 256, "embed_content: output_dimensionality")

# RPM 2: both generate calls above used it up; the third call in the minute is refused.
try:
    client.models.generate_content(model=MODEL, contents="one too many")
    check(False, "the third request of the minute raises")
except errors.ClientError as e:
    check(e.code == 429, f"ClientError.code == 429 (got {e.code})")
    check(e.status == "RESOURCE_EXHAUSTED", f"ClientError.status (got {e.status})")
    details = e.details["error"]["details"]
    types_ = [d["@type"] for d in details]
    check("type.googleapis.com/google.rpc.RetryInfo" in types_, "RetryInfo in the details")
    check("type.googleapis.com/google.rpc.QuotaFailure" in types_, "QuotaFailure in the details")
    retry = next(d for d in details if d["@type"].endswith("RetryInfo"))
    check(retry["retryDelay"].endswith("s"), f"retryDelay {retry['retryDelay']}")

# The OpenAI SDK on the compatible surface, with a key of its own project.
oai = openai.OpenAI(api_key=sys.argv[3], base_url=f"{base}/v1beta/openai/")
c = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "abcdefgh"}], max_tokens=12)
check(c.usage.prompt_tokens == 2 and c.usage.completion_tokens == 12, f"openai: usage {c.usage}")
check(c.choices[0].message.content.startswith("tok"), "openai: message content")
check(c.choices[0].finish_reason == "length", "openai: finish_reason length")
m = oai.models.retrieve(MODEL)
check(m.id == f"models/{MODEL}", f"openai: models.retrieve ({m.id})")
tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
c = oai.chat.completions.create(model=PRO, messages=[{"role": "user", "content": "Paris?"}], tools=[tool],
                                tool_choice="required")
tc = c.choices[0].message.tool_calls or []
check(len(tc) == 1 and tc[0].function.name == "get_weather", f"openai: tool_calls ({tc})")
check("city" in __import__("json").loads(tc[0].function.arguments), "openai: tool call arguments are JSON")
fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": {
    "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}
c = oai.chat.completions.create(model=PRO, messages=[{"role": "user", "content": "n?"}], response_format=fmt)
check(isinstance(__import__("json").loads(c.choices[0].message.content)["n"], int), "openai: response_format json_schema")
emb = oai.embeddings.create(model="gemini-embedding-001", input=["abcdefgh", "abcd"], dimensions=64)
check(len(emb.data) == 2 and len(emb.data[1].embedding) == 64, "openai: embeddings")
check(emb.usage.prompt_tokens == 3, f"openai: embeddings usage ({emb.usage})")
stream = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
text = "".join((ch.choices[0].delta.content or "") for ch in stream if ch.choices)
check(text.startswith("tok"), "openai: streamed content")
try:
    oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "again"}])
    check(False, "openai: the third request of the minute raises")
except openai.RateLimitError as e:
    check(e.status_code == 429, "openai: RateLimitError 429")
    check("exceeded your current quota" in str(e), f"openai: RateLimitError carries the message ({e})")
    body = e.body.get("error", e.body) if isinstance(e.body, dict) else {}
    kinds = [d.get("@type", "") for d in body.get("details", [])]
    check(any(k.endswith("QuotaFailure") for k in kinds), f"openai: RateLimitError carries the quota details ({kinds})")
    check(getattr(e, "type", None) == "rate_limit_error", f"openai: error type ({getattr(e, 'type', None)})")

print("all SDK checks passed")
