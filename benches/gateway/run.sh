#!/usr/bin/env bash
# The gateway load test of BENCHMARKS.md ("The gateway under load"): a private nginx answering
# chat completions at once, the gateway binary (llm-gateway, release build) in front of it with its full
# stack on the route, and — when `litellm` is on the PATH — LiteLLM's proxy in front of the
# same nginx. wrk drives each closed-loop at 1, 8 and 32 connections; oha at a fixed 100 and
# 500 requests/s; the upstream is measured directly with the same generators.
#
# `keyed` is the same gateway with a gateway key checked and a per-key rate limit on every
# request (gateway-keys.toml); BASELINE=path/to/an/older/gateway/binary adds that binary,
# on gateway.toml, as `baseline`, measured in the same rounds. For each gateway the CPU time
# its process spent per request is reported beside throughput and latency.
#
# This VM's throughput drifts by a third over minutes, so the upstream and the gateway are
# measured in alternation, ROUNDS times (default 3), and each ratio and added latency is
# taken within a round; the summary gives the median over the rounds and the range.
# LiteLLM, at about 50 requests/s, runs once, alone, at the end.
#
# Needs nginx and wrk (apt-get install -y nginx wrk), oha (cargo install oha), and for the
# comparison LiteLLM (pip install 'litellm[proxy]'). DURATION (default 10s) sets each run.
set -euo pipefail
cd "$(dirname "$0")"
here=$PWD
duration=${DURATION:-10s}
rounds=${ROUNDS:-3}
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

# A latency as wrk and oha print it ("462.00us", "1.56ms", "0.3648 ms", "120.95 µs") in ms.
to_ms='function ms(v, u) {
    if (u == "") { u = v; sub(/^[0-9.]+/, "", u); sub(/[a-zµ]+$/, "", v) }
    if (u == "s" || u == "sec" || u == "secs") return v * 1000; if (u == "ms") return v
    if (u == "us" || u == "µs") return v / 1000; if (u == "ns") return v / 1e6; return -1 }'

# CPU ticks (user + system) the process $1 has used; 0 without a process.
ticks() {
    if [ -z "$1" ]; then echo 0; return; fi
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}
hz=$(getconf CLK_TCK)
seconds=${duration%s}

# One measurement of the URL $2 named $1 in round $3 (process $4, whose CPU is counted);
# appends "name round test rps p50 p90 p99 cpu_us_per_request" lines to results.tsv and
# prints the generator's summary lines.
measure() {
    local name=$1 url=$2 round=$3 pid=${4:-}
    for connections in 1 8 32; do
        threads=$(( connections < 2 ? 1 : 2 ))
        echo "## $name, round $round, $connections connections (wrk, closed loop, $duration)"
        before=$(ticks "$pid")
        wrk -t"$threads" -c"$connections" -d"$duration" -s post.lua --latency "$url" > "$work/out"
        after=$(ticks "$pid")
        grep -E 'Requests/sec|^ +(50|90|99)%|Non-2xx|Socket errors' "$work/out"
        awk -v n="$name" -v r="$round" -v t="wrk-${connections}c" -v cpu=$((after - before)) -v hz="$hz" -v s="$seconds" "$to_ms"'
            /Requests\/sec/ { rps = $2 }
            /^ +50%/ { p50 = ms($2, "") } /^ +90%/ { p90 = ms($2, "") } /^ +99%/ { p99 = ms($2, "") }
            END { print n, r, t, rps, p50, p90, p99, (cpu > 0 ? cpu / hz * 1e6 / (rps * s) : -1) }' "$work/out" >> "$work/results.tsv"
    done
    for rate in 100 500; do
        echo "## $name, round $round, $rate requests/s (oha, fixed rate, $duration)"
        before=$(ticks "$pid")
        oha --no-tui -z "$duration" -q "$rate" -c 32 -m POST -H 'content-type: application/json' \
            -H "authorization: Bearer $key" -d "$body" "$url" > "$work/out"
        after=$(ticks "$pid")
        grep -E 'Requests/sec|Success rate|50.00%|90.00%|99.00%|\[200\]|\[[3-5][0-9][0-9]\]' "$work/out"
        awk -v n="$name" -v r="$round" -v t="oha-${rate}rps" -v cpu=$((after - before)) -v hz="$hz" -v s="$seconds" "$to_ms"'
            /Requests\/sec/ { rps = $2 }
            /50.00% in/ { p50 = ms($3, $4) } /90.00% in/ { p90 = ms($3, $4) } /99.00% in/ { p99 = ms($3, $4) }
            END { print n, r, t, rps, p50, p90, p99, (cpu > 0 ? cpu / hz * 1e6 / (rps * s) : -1) }' "$work/out" >> "$work/results.tsv"
    done
}

(cd ../.. && cargo build --quiet --release -p llm-gateway)
nginx -p "$work" -c "$here/nginx.conf" &
pids+=($!)
wait_for 18080
upstream=http://127.0.0.1:18080/v1/chat/completions
# It answers before it is measured.
check() { curl -sf "$1" -H 'content-type: application/json' -H "authorization: Bearer $key" -d "$body" > /dev/null; }

../../target/release/llm-gateway --config gateway.toml > "$work/gateway.log" 2>&1 &
pids+=($!)
gateway_pid=$!
../../target/release/llm-gateway --config gateway-keys.toml > "$work/keyed.log" 2>&1 &
pids+=($!)
keyed_pid=$!
wait_for 18081
wait_for 18083
gateway=http://127.0.0.1:18081/v1/chat/completions
keyed=http://127.0.0.1:18083/v1/chat/completions
check "$upstream"
check "$gateway"
check "$keyed"
if [ -n "${BASELINE:-}" ]; then
    "$BASELINE" --config gateway.toml --listen 127.0.0.1:18084 > "$work/baseline.log" 2>&1 &
    pids+=($!)
    baseline_pid=$!
    wait_for 18084
    baseline=http://127.0.0.1:18084/v1/chat/completions
    check "$baseline"
fi
touch "$work/results.tsv"
names=(gateway keyed); urls=("$gateway" "$keyed"); procs=("$gateway_pid" "$keyed_pid")
if [ -n "${BASELINE:-}" ]; then names+=(baseline); urls+=("$baseline"); procs+=("$baseline_pid"); fi
for round in $(seq 1 "$rounds"); do
    echo "# round $round"
    measure upstream "$upstream" "$round"
    # The gateways in a rotating order: whichever runs first after the upstream is not
    # always the same one.
    n=${#names[@]}
    for i in $(seq 0 $((n - 1))); do
        j=$(( (i + round - 1) % n ))
        measure "${names[$j]}" "${urls[$j]}" "$round" "${procs[$j]}"
    done
done
# An idle LiteLLM still takes CPU: the gateways are stopped first, LiteLLM measured alone.
for pid in "$gateway_pid" "$keyed_pid" ${baseline_pid:-}; do kill "$pid"; wait "$pid" 2>/dev/null || true; done
if command -v litellm > /dev/null; then
    # exec: the process to stop is LiteLLM itself, not a subshell around it.
    (cd "$work" && exec litellm --config "$here/litellm.yaml" --port 18082 --num_workers 1 > litellm.log 2>&1) &
    pids+=($!)
    litellm_pid=$!
    wait_for 18082
    check http://127.0.0.1:18082/v1/chat/completions
    echo "# LiteLLM"
    measure litellm http://127.0.0.1:18082/v1/chat/completions 1
    kill "$litellm_pid"; wait "$litellm_pid" 2>/dev/null || true
fi

echo
echo "# Summary: median over $rounds rounds [min–max]; ratios and added latencies are taken within each round"
sort -k3,3 -k1,1 -k2,2n "$work/results.tsv" | awk '
    function med(list,    n, a, i, j, t, m, f) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        m = n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        f = m >= 1000 ? "%.0f [%.0f–%.0f]" : "%.3g [%.3g–%.3g]"
        return sprintf(f, m, a[1], a[n])
    }
    { key = $3; tests[key] = 1; name[$1] = 1
      rps[$1, key] = rps[$1, key] " " $4; p50[$1, key] = p50[$1, key] " " $5; p99[$1, key] = p99[$1, key] " " $7
      if ($8 > 0) cpu[$1, key] = cpu[$1, key] " " $8
      v[$1, key, $2, "rps"] = $4; v[$1, key, $2, "p50"] = $5; v[$1, key, $2, "p99"] = $7; maxr = ($2 > maxr ? $2 : maxr) }
    END {
        split("wrk-1c wrk-8c wrk-32c oha-100rps oha-500rps", order, " ")
        split("upstream gateway keyed baseline litellm", names, " ")
        for (k = 1; k <= 5; k++) {
            key = order[k]
            if (!(key in tests)) continue
            printf "## %s\n", key
            for (i = 1; i <= 5; i++) if (((n = names[i]), key) in rps)
                printf "%-9s requests/s %s | p50 ms %s | p99 ms %s%s\n", n, med(rps[n, key]), med(p50[n, key]), med(p99[n, key]), \
                    ((n, key) in cpu ? " | CPU µs/request " med(cpu[n, key]) : "")
            for (i = 2; i <= 4; i++) {
                g = names[i]; ratio = ""; a50 = ""; a99 = ""
                for (r = 1; r <= maxr; r++) if (((g, key, r, "rps") in v) && (("upstream", key, r, "rps") in v)) {
                    ratio = ratio " " 100 * v[g, key, r, "rps"] / v["upstream", key, r, "rps"]
                    a50 = a50 " " v[g, key, r, "p50"] - v["upstream", key, r, "p50"]
                    a99 = a99 " " v[g, key, r, "p99"] - v["upstream", key, r, "p99"]
                }
                if (ratio != "") printf "%s/upstream requests/s %% %s | added p50 ms %s | added p99 ms %s\n", g, med(ratio), med(a50), med(a99)
            }
        }
    }'
