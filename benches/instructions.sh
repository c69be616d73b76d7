#!/usr/bin/env bash
# Instructions per call, counted by callgrind: each contender at N calls and at 0, the
# difference divided by N. The counts repeat to the instruction (wall-clock nanoseconds on a
# shared VM do not).
#
#   bash benches/instructions.sh          rate-limit admissions (examples/admission_cost)
#   bash benches/instructions.sh hops     a call through each layer (examples/hop_cost);
#                                         RECORDER=prometheus: with a metrics recorder installed
#   bash benches/instructions.sh decode   a text-only answer decoded (examples/decode_cost)
#
# Admissions: on the fixed clocks (the admission alone) and on tokio's clock the counts
# repeat; quanta's fallback under valgrind does not (CONTENDERS="llm-tower-quanta governor"
# to see it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-admissions}" = decode ]; then
    N=${N:-200}
    cargo build -q --release --features providers --example decode_cost
    bin=target/release/examples/decode_cost
    contenders=${CONTENDERS:-response stream}
    unit=decode
elif [ "${1:-admissions}" = hops ]; then
    N=${N:-200000}
    cargo build -q --release --features retry,breaker,fallback,ratelimit --example hop_cost
    bin=target/release/examples/hop_cost
    contenders=${CONTENDERS:-bare tower ours-no-budget ours breaker fallback ratelimit stack record}
    unit=call
else
    N=${N:-200000}
    cargo build -q --release --features fast-clock --example admission_cost
    bin=target/release/examples/admission_cost
    contenders=${CONTENDERS:-llm-tower-fixed governor-fixed llm-tower-tokio}
    unit=admission
fi
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for contender in $contenders; do
    full=$(count "$contender" "$N")
    base=$(count "$contender" 0)
    awk -v c="$contender" -v f="$full" -v b="$base" -v n="$N" -v u="$unit" \
        'BEGIN { printf "%-18s %6.1f instructions per %s\n", c, (f - b) / n, u }'
done
