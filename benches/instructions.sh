#!/usr/bin/env bash
# Instructions per rate-limit admission, counted by callgrind: each contender at N
# admissions and at 0, the difference divided by N. On the fixed clocks (the admission
# alone) and on tokio's clock the counts repeat to the instruction; quanta's fallback under
# valgrind does not (CONTENDERS="llm-tower-quanta governor" to see it).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200000}
cargo build -q --release --features fast-clock --example admission_cost
bin=target/release/examples/admission_cost
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for contender in ${CONTENDERS:-llm-tower-fixed governor-fixed llm-tower-tokio}; do
    full=$(count "$contender" "$N")
    base=$(count "$contender" 0)
    awk -v c="$contender" -v f="$full" -v b="$base" -v n="$N" \
        'BEGIN { printf "%-18s %6.1f instructions per admission\n", c, (f - b) / n }'
done
