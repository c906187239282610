"""The official SDKs and LiteLLM through `keysim proxy` in front of `keysim mock`: generate,
stream (both forms), count tokens, embed, list models, chat (streaming with usage),
embeddings; and the 401 a client without a valid proxy token gets.

Usage: python3 check_proxy.py PROXY_URL TOKEN
The proxy serves tests/proxy/proxy.toml (gemini-2.5-flash and gemini-embedding-001) with
TOKEN among its client tokens. Exits non-zero with a message on the first failure.
"""

import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from google import genai  # noqa: E402
from google.genai import errors, types  # noqa: E402
import litellm  # noqa: E402
import openai  # noqa: E402
from checks import check  # noqa: E402

base, token = sys.argv[1], sys.argv[2]
MODEL, EMBED = "gemini-2.5-flash", "gemini-embedding-001"



client = genai.Client(api_key=token, http_options=types.HttpOptions(base_url=base, api_version="v1beta"))
r = client.models.generate_content(
    model=MODEL, contents="Explain how AI works", config=types.GenerateContentConfig(max_output_tokens=20)
)
check(r.text.startswith("tok") and r.usage_metadata.candidates_token_count == 20, "genai: generate_content")
chunks = list(client.models.generate_content_stream(model=MODEL, contents="Stream a story about a key pool"))
check(len(chunks) >= 2 and chunks[-1].usage_metadata.prompt_token_count > 0, f"genai: stream ({len(chunks)} chunks)")
n = client.models.count_tokens(model=MODEL, contents="abcdefghijklmnop")
check(n.total_tokens == 4, f"genai: count_tokens ({n.total_tokens})")
e = client.models.embed_content(model=EMBED, contents="one text to embed")
check(len(e.embeddings) == 1 and len(e.embeddings[0].values) == 3072, "genai: embed_content")
check(any(m.name == f"models/{MODEL}" for m in client.models.list()), "genai: models.list")

bad = genai.Client(api_key="not-a-proxy-token", http_options=types.HttpOptions(base_url=base, api_version="v1beta"))
try:
    bad.models.generate_content(model=MODEL, contents="hello")
    check(False, "genai: a wrong token is refused")
except errors.ClientError as err:
    check(err.code == 401, f"genai: a wrong token gets 401 ({err.code})")

oai = openai.OpenAI(api_key=token, base_url=f"{base}/v1beta/openai/", max_retries=0)
c = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello there"}], max_tokens=15)
check(c.choices[0].message.content.startswith("tok") and c.usage.completion_tokens == 15, "openai: chat")
stream = oai.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": "stream, with usage"}],
    stream=True,
    stream_options={"include_usage": True},
)
parts = list(stream)
usage = [p.usage for p in parts if p.usage]
check(len(parts) >= 2 and usage and usage[-1].prompt_tokens > 0, f"openai: streaming with usage ({len(parts)} chunks)")
emb = oai.embeddings.create(model=EMBED, input="abcdefgh", dimensions=64)
check(len(emb.data) == 1 and len(emb.data[0].embedding) == 64, "openai: embeddings")
check(any(m.id.endswith(MODEL) for m in oai.models.list()), "openai: models.list")
try:
    openai.OpenAI(api_key="wrong-token", base_url=f"{base}/v1beta/openai/", max_retries=0).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    check(False, "openai: a wrong token is refused")
except openai.AuthenticationError:
    check(True, "openai: a wrong token raises AuthenticationError (401)")

ARGS = {"model": f"gemini/{MODEL}", "api_key": token, "api_base": f"{base}/v1beta", "num_retries": 0}
r = litellm.completion(messages=[{"role": "user", "content": "abcdefgh"}], max_tokens=12, **ARGS)
check(r.choices[0].message.content.startswith("tok") and r.usage.completion_tokens == 12, "litellm: completion")
chunks = list(litellm.completion(messages=[{"role": "user", "content": "stream this"}], stream=True, **ARGS))
check(len(chunks) >= 2, f"litellm: streaming ({len(chunks)} chunks)")

print("all proxy checks passed")
