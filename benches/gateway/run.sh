#!/usr/bin/env bash
# The gateway load test of BENCHMARKS.md ("The gateway under load"): a private nginx answering
# chat completions at once, the gateway example (release build) in front of it with its full
# stack on the route, and — when `litellm` is on the PATH — LiteLLM's proxy in front of the
# same nginx. wrk drives each closed-loop at 1, 8 and 32 connections; oha at a fixed 100 and
# 500 requests/s; the upstream is measured directly with the same generators.
#
# Needs nginx and wrk (apt-get install -y nginx wrk), oha (cargo install oha), and for the
# comparison LiteLLM (pip install 'litellm[proxy]'). DURATION (default 10s) sets each run.
set -euo pipefail
cd "$(dirname "$0")"
here=$PWD
duration=${DURATION:-10s}
body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}],"max_tokens":16}'
key=sk-bench-master-key-0123456789abcdef # LiteLLM's master key (litellm.yaml); the others ignore it
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # port
    for _ in $(seq 1 1200); do
        if (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

(cd ../.. && cargo build --quiet --release --example gateway)
nginx -p "$work" -c "$here/nginx.conf" &
pids+=($!)
wait_for 18080

# Each proxy runs alone while it is measured (an idle LiteLLM still takes CPU), in front of
# the same nginx, which is measured directly first.
start() { # name → the URL to measure
    case $1 in
        upstream) echo http://127.0.0.1:18080/v1/chat/completions ;;
        gateway)
            ../../target/release/examples/gateway --config gateway.toml > "$work/gateway.log" 2>&1 &
            pids+=($!)
            proxy=$!
            wait_for 18081
            echo http://127.0.0.1:18081/v1/chat/completions ;;
        litellm)
            # exec: the process to stop is LiteLLM itself, not a subshell around it.
            (cd "$work" && exec litellm --config "$here/litellm.yaml" --port 18082 --num_workers 1 > litellm.log 2>&1) &
            pids+=($!)
            proxy=$!
            wait_for 18082
            echo http://127.0.0.1:18082/v1/chat/completions ;;
    esac
}
targets=(upstream gateway)
if command -v litellm > /dev/null; then targets+=(litellm); fi

for name in "${targets[@]}"; do
    proxy=
    start "$name" > "$work/url"
    url=$(cat "$work/url")
    # It answers before it is measured.
    curl -sf "$url" -H 'content-type: application/json' -H "authorization: Bearer $key" -d "$body" > /dev/null
    echo "# $name"
    for connections in 1 8 32; do
        threads=$(( connections < 2 ? 1 : 2 ))
        echo "## $name, $connections connections (wrk, closed loop, $duration)"
        wrk -t"$threads" -c"$connections" -d"$duration" -s post.lua --latency "$url" \
            | grep -E 'Requests/sec|^ +(50|90|99)%|Non-2xx|Socket errors'
    done
    for rate in 100 500; do
        echo "## $name, $rate requests/s (oha, fixed rate, $duration)"
        oha --no-tui -z "$duration" -q "$rate" -c 32 -m POST -H 'content-type: application/json' -H "authorization: Bearer $key" -d "$body" "$url" \
            | grep -E 'Requests/sec|Success rate|50.00%|90.00%|99.00%|\[200\]|\[[3-5][0-9][0-9]\]'
    done
    if [ -n "$proxy" ]; then kill "$proxy"; wait "$proxy" 2>/dev/null || true; fi
done
