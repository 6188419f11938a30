#!/usr/bin/env bash
# fuzz.sh - `make fuzz`: builds the libFuzzer harnesses (tests/fuzz/fuzz_*.c) in build-fuzz with
# clang (-DLT_FUZZ=ON: ASan + UBSan + coverage) and runs each for FUZZ_TIME seconds (default
# 60), FUZZ_JOBS harnesses at a time (default 1), every one with -max_len (per harness, below),
# -rss_limit_mb and a per-input -timeout. Each starts from its seed corpus tests/fuzz/corpus/NAME
# (and tests/fuzz/regressions/NAME) and grows a working corpus in build-fuzz/corpus/NAME (kept
# between runs; the repository's corpus is never written). Fails when any harness reports a
# crash, leak, timeout or out-of-memory: the input is in build-fuzz/artifacts/NAME/ and the log
# in build-fuzz/logs/NAME.log. Prints the executions of each harness.
#   FUZZ_TIME=600 make fuzz            longer
#   FUZZ_ONLY="gguf spm" make fuzz     some harnesses
#   FUZZ_JOBS=2 make fuzz              two at a time (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_FUZZ:-build-fuzz}
TIME=${FUZZ_TIME:-60}
JOBS=${FUZZ_JOBS:-1}
RSS=${FUZZ_RSS_MB:-2048}
TIMEOUT=${FUZZ_TIMEOUT:-10}
CC_FUZZ=${FUZZ_CC:-clang}

# the largest input each harness is given (bytes): a little above its largest seed
max_len() {
    case $1 in
    gguf | tokenizer_json) echo 65536 ;;
    spm | llama2c | safetensors) echo 16384 ;;
    data | chat_template) echo 8192 ;;
    *) echo 4096 ;;
    esac
}

t0=$(date +%s)
cmake -S . -B "$BUILD" -DCMAKE_C_COMPILER="$CC_FUZZ" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DLT_FUZZ=ON -DLT_CUDA=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" >/dev/null
t1=$(date +%s)
echo "fuzz: built $BUILD in $((t1 - t0)) s; $TIME s per harness, $JOBS at a time"

names=${FUZZ_ONLY:-$(for f in tests/fuzz/fuzz_*.c; do n=${f##*/fuzz_}; echo "${n%.c}"; done)}
mkdir -p "$BUILD/logs"
run_one() {
    local n=$1 bin="$BUILD/fuzz_$1"
    local corpus="$BUILD/corpus/$n" art="$BUILD/artifacts/$n/" log="$BUILD/logs/$n.log"
    mkdir -p "$corpus" "$art"
    local dict=()
    [ -f "tests/fuzz/dict/$n.dict" ] && dict=("-dict=tests/fuzz/dict/$n.dict")
    local seeds=("tests/fuzz/corpus/$n")
    [ -d "tests/fuzz/regressions/$n" ] && seeds+=("tests/fuzz/regressions/$n")
    # detect_leaks: a leak is a failure; the corpus dirs after the first are only read
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
        nice "$bin" "$corpus" "${seeds[@]}" "${dict[@]}" -max_total_time="$TIME" \
        -max_len="$(max_len "$n")" -rss_limit_mb="$RSS" -timeout="$TIMEOUT" \
        -malloc_limit_mb="$RSS" -artifact_prefix="$art" -print_final_stats=1 >"$log" 2>&1
}
export -f run_one max_len
export BUILD TIME RSS TIMEOUT

fail=0
pids=()
declare -A pid_of
for n in $names; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
    run_one "$n" &
    pid_of[$n]=$!
done
printf '%-18s %12s %10s %s\n' harness executions exec/s result
for n in $names; do
    rc=0
    wait "${pid_of[$n]}" || rc=$?
    log="$BUILD/logs/$n.log"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    if [ "$rc" = 0 ]; then
        res=ok
    else
        res="FAILED (rc $rc): $(grep -m1 -E 'ERROR: |runtime error|fuzz: ' "$log" || true)"
        fail=1
    fi
    printf '%-18s %12s %10s %s\n' "$n" "${execs:-?}" "${speed:-?}" "$res"
done
echo "fuzz: $(($(date +%s) - t1)) s of fuzzing"
if [ "$fail" != 0 ]; then
    echo "fuzz: a harness failed: inputs in $BUILD/artifacts/NAME/, logs in $BUILD/logs/NAME.log" >&2
    echo "fuzz: replay one with $BUILD/fuzz_NAME FILE; save it under tests/fuzz/regressions/NAME/" >&2
    exit 1
fi
