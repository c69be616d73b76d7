-- wrk: POST one chat completion request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
-- LiteLLM's proxy requires its master key; the gateway and nginx ignore it.
wrk.headers["Authorization"] = "Bearer sk-bench-master-key-0123456789abcdef"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}],"max_tokens":16}'
