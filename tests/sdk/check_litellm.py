"""LiteLLM's Gemini provider against `keysim mock`: completion, streaming, and the
RateLimitError a client sees when a project's quota runs out.

Usage: python3 check_litellm.py BASE_URL KEY
The fake serves tests/sdk/sdk-pool.toml (RPM 2 for `gemini-2.5-flash`) and KEY has not been
used this minute. LiteLLM appends `/models/...` to `api_base`, so it is the fake's base URL
with the API version: BASE_URL/v1beta. Exits non-zero with a message on the first failure.
"""

import os
import sys

# No network: LiteLLM would fetch its model cost map from GitHub.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
from checks import check  # noqa: E402

base, key = sys.argv[1], sys.argv[2]
ARGS = {"model": "gemini/gemini-2.5-flash", "api_key": key, "api_base": f"{base}/v1beta", "num_retries": 0}



r = litellm.completion(messages=[{"role": "user", "content": "abcdefgh"}], max_tokens=12, **ARGS)
check(r.choices[0].message.content.startswith("tok"), "litellm: completion")
check(r.usage.prompt_tokens == 2 and r.usage.completion_tokens == 12, f"litellm: usage ({r.usage})")
chunks = list(litellm.completion(messages=[{"role": "user", "content": "stream this"}], stream=True, **ARGS))
text = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
check(len(chunks) >= 2 and text.startswith("tok"), f"litellm: streaming ({len(chunks)} chunks)")
try:
    litellm.completion(messages=[{"role": "user", "content": "one too many"}], **ARGS)
    check(False, "litellm: the third request of the minute raises")
except litellm.RateLimitError as e:
    check("RESOURCE_EXHAUSTED" in str(e) and "QuotaFailure" in str(e), "litellm: RateLimitError with Gemini's body")

print("all LiteLLM checks passed")
