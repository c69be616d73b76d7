#!/usr/bin/env bash
# The official openai and anthropic Python SDKs (pinned in requirements.txt, in a virtual
# environment made here) against the gateway binary (llm-gateway), started as a user starts
# it: the README's quick-start configuration, unmodified, with the server's address, its key
# and a caller key from the environment, in front of the test kit's mock-provider binary;
# and a second gateway (gateway-mixed.toml) whose routes cross dialects and fail on purpose.
# `bash tests/sdk/run.sh`; CI runs it.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${SDK_VENV:-target/sdk-venv}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r tests/sdk/requirements.txt

# The gateway and the mock-provider binaries, with the test build's features so that its
# artifacts are reused.
cargo build -q --workspace --all-features --bins

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # port
    for _ in $(seq 1 300); do
        if (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

cat > "$work/plan.toml" <<'PLAN'
[[rule]]
model = "gpt-4o"
stream = true
fault = { fault = "cut_after", chunks = 40 }

[[rule]]
model = "gpt-4o"
stream = false
fault = { fault = "reset" }
PLAN
mock_port=$(free_port)
target/debug/mock-provider --port "$mock_port" --plan "$work/plan.toml" --api-key sdk-key > "$work/mock.log" 2>&1 &
pids+=($!)
wait_for "$mock_port"

# The README's quick-start configuration, as written there.
awk '/<!-- quick-start -->/ { on = 1; next } on && /^```toml/ { inside = 1; next } inside && /^```/ { exit } inside { print }' crates/llm-gateway/README.md > "$work/gateway.toml"
gateway_port=$(free_port)
GATEWAY_LISTEN="127.0.0.1:$gateway_port" GATEWAY_LLM_BASE_URL="http://127.0.0.1:$mock_port/v1" LLM_API_KEY=sdk-key \
    target/debug/llm-gateway --config "$work/gateway.toml" > "$work/gateway.log" 2>&1 &
pids+=($!)
wait_for "$gateway_port"

# The second mock: the `*-down` models drop the connection (the route falls back at once),
# the others fail as their names say.
cat > "$work/mixed-plan.toml" <<'PLAN'
[[rule]]
model = "gpt-down"
fault = { fault = "reset" }

[[rule]]
model = "claude-down"
fault = { fault = "reset" }

[[rule]]
model = "embed-down"
fault = { fault = "reset" }

[[rule]]
model = "claude-overloaded"
fault = { fault = "overloaded" }

[[rule]]
model = "gpt-unavailable"
fault = { fault = "status", status = 503 }

[[rule]]
model = "claude-limited"
fault = { fault = "rate_limited", retry_after = "7s" }

[[rule]]
model = "claude-breaks"
stream = true
fault = { fault = "error_after", chunks = 5 }
PLAN
mixed_mock_port=$(free_port)
target/debug/mock-provider --port "$mixed_mock_port" --plan "$work/mixed-plan.toml" --api-key sdk-key > "$work/mixed-mock.log" 2>&1 &
pids+=($!)
wait_for "$mixed_mock_port"
mixed_port=$(free_port)
mixed_mock="http://127.0.0.1:$mixed_mock_port"
GATEWAY_LISTEN="127.0.0.1:$mixed_port" LLM_API_KEY=sdk-key SDK_GATEWAY_KEY=sdk-gateway-key-0123456789 \
    GATEWAY_OPENAI_BASE_URL="$mixed_mock/v1" GATEWAY_BARE_OPENAI_BASE_URL="$mixed_mock/v1" \
    GATEWAY_CLAUDE_BASE_URL="$mixed_mock" GATEWAY_BARE_BASE_URL="$mixed_mock" \
    GATEWAY_BARE_LIMITED_BASE_URL="$mixed_mock" GATEWAY_BARE_BREAKS_BASE_URL="$mixed_mock" \
    GATEWAY_GEMINI_BASE_URL="$mixed_mock/v1beta" GATEWAY_POOLED_BASE_URL="$mixed_mock/v1" \
    target/debug/llm-gateway --config tests/sdk/gateway-mixed.toml > "$work/mixed.log" 2>&1 &
pids+=($!)
wait_for "$mixed_port"

export GATEWAY_URL="http://127.0.0.1:$gateway_port" MIXED_URL="http://127.0.0.1:$mixed_port" MIXED_KEY=sdk-gateway-key-0123456789
failed=0
for suite in openai_sdk anthropic_sdk; do
    if ! "$venv/bin/python" "tests/sdk/$suite.py"; then
        failed=1
    fi
done
if [ "$failed" != 0 ]; then
    echo "== gateway log"; tail -n 40 "$work/gateway.log"
    echo "== mixed gateway log"; tail -n 40 "$work/mixed.log"
    exit 1
fi
