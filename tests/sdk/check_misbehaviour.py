"""The official SDKs against `keysim mock` when the provider misbehaves: each failure the fake
gives (a suspended key, a deleted key, a capacity 429, 500, 503, a timeout, quota 429s in
every shape) raises the exception type the SDK raises for it against Gemini, and cached
input tokens reach the SDK's usage objects.

Usage: python3 check_misbehaviour.py BASE_URL SHAPE
The fake serves tests/sdk/sdk-misbehaviour.toml with `provider.quota_body=SHAPE`. Exits
non-zero with a message on the first failure.
"""

import sys

from google import genai
from google.genai import errors, types
import openai
import checks  # noqa: E402

base, shape = sys.argv[1], sys.argv[2]
MODEL = "gemini-2.5-flash"
PROMPT = "abcdefghijklmnop"  # 4 tokens, 2 of them cached


def check(cond, what):
    checks.check(cond, what, tag=shape)


CLIENTS = []  # a client closes its connections once dropped: keep them all


def gemini(key, headers=None, timeout_ms=None):
    opts = types.HttpOptions(base_url=base, api_version="v1beta", headers=headers or {}, timeout=timeout_ms)
    CLIENTS.append(genai.Client(api_key=key, http_options=opts))
    return CLIENTS[-1]


def oai(key, headers=None, timeout=30.0):
    return openai.OpenAI(
        api_key=key, base_url=f"{base}/v1beta/openai/", max_retries=0, default_headers=headers or {}, timeout=timeout
    )


def gemini_raises(client, kind, code, status, what):
    try:
        client.models.generate_content(model=MODEL, contents=PROMPT)
    except kind as e:
        check(e.code == code and e.status == status, f"{what}: {kind.__name__} {code} {status} (got {e.code} {e.status})")
        return e
    check(False, f"{what}: raises {kind.__name__}")


def openai_raises(client, kind, code, what):
    try:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}])
    except kind as e:
        check(getattr(e, "status_code", code) == code, f"openai {what}: {kind.__name__} {code}")
        return e
    check(False, f"openai {what}: raises {kind.__name__}")


# Cached tokens: promptTokenCount includes them; cachedContentTokenCount names them.
r = gemini("fake-gemini-key", {"x-keysim-fault": "none"}).models.generate_content(model=MODEL, contents=PROMPT)
u = r.usage_metadata
check(u.prompt_token_count == 4 and u.cached_content_token_count == 2, f"cached tokens in usage_metadata ({u})")
c = oai("fake-openai-key").chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}])
check(c.usage.prompt_tokens_details.cached_tokens == 2, f"openai: cached tokens in usage ({c.usage})")

# Keys the provider suspended or deleted.
gemini_raises(gemini("fake-suspended-key"), errors.ClientError, 403, "PERMISSION_DENIED", "suspended key")
e = gemini_raises(gemini("fake-deleted-key"), errors.ClientError, 400, "INVALID_ARGUMENT", "deleted key")
check(e.details["error"]["details"][0]["reason"] == "API_KEY_INVALID", "deleted key: reason API_KEY_INVALID")
openai_raises(oai("fake-suspended-key"), openai.PermissionDeniedError, 403, "suspended key")
openai_raises(oai("fake-deleted-key"), openai.BadRequestError, 400, "deleted key")

# The provider's own failures, one of each (the fake's replay header picks which).
fault = lambda kind: {"x-keysim-fault": kind, "x-keysim-latency-ms": "300"}
e = gemini_raises(gemini("fake-gemini-key", fault("capacity")), errors.ClientError, 429, "RESOURCE_EXHAUSTED", "capacity 429")
check("details" not in e.details["error"], "capacity 429: no details")
gemini_raises(gemini("fake-gemini-key", fault("overloaded")), errors.ServerError, 503, "UNAVAILABLE", "503")
gemini_raises(gemini("fake-gemini-key", fault("internal")), errors.ServerError, 500, "INTERNAL", "500")
gemini_raises(gemini("fake-gemini-key", fault("timeout")), errors.ServerError, 504, "DEADLINE_EXCEEDED", "504")
try:
    gemini("fake-gemini-key", fault("timeout") | {"x-keysim-latency-ms": "5000"}, timeout_ms=300).models.generate_content(
        model=MODEL, contents=PROMPT
    )
    check(False, "a client that stops waiting raises")
except Exception as e:  # the HTTP library's own timeout exception
    check("Timeout" in type(e).__name__, f"a client that stops waiting: {type(e).__name__}")
openai_raises(oai("fake-openai-key", fault("capacity")), openai.RateLimitError, 429, "capacity 429")
openai_raises(oai("fake-openai-key", fault("overloaded")), openai.InternalServerError, 503, "503")
openai_raises(oai("fake-openai-key", fault("internal")), openai.InternalServerError, 500, "500")
openai_raises(oai("fake-openai-key", fault("timeout")), openai.InternalServerError, 504, "504")
openai_raises(oai("fake-openai-key", fault("timeout") | {"x-keysim-latency-ms": "5000"}, timeout=0.3), openai.APITimeoutError, None, "timeout")

# Quota 429s in this run's shape: RPM 2, and each project has served one request and been
# refused the rest, which the provider does not count; two more use up the minute.
g = gemini("fake-gemini-key")
g.models.generate_content(model=MODEL, contents=PROMPT)
e = gemini_raises(g, errors.ClientError, 429, "RESOURCE_EXHAUSTED", f"quota 429 ({shape})")
kinds = [d["@type"].rsplit(".", 1)[-1] for d in e.details["error"].get("details", [])]
want = {"quota-failure": "QuotaFailure", "help-only": "Help", "error-info": "ErrorInfo"}[shape]
check(want in kinds, f"quota 429 ({shape}): {want} in the details ({kinds})")
o = oai("fake-openai-key")
o.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}])
openai_raises(o, openai.RateLimitError, 429, f"quota 429 ({shape})")

print("all misbehaviour checks passed")
