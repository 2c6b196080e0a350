#!/usr/bin/env bash
# apt: python3 python3-dkim
# Issue 9 (From policy): the differential suite against Python's email.headerregistry
# (email.policy.default) with many more generated From values than `cargo test` runs, plus the
# collected corpus (tests/from_corpus.jsonl). Python is mandatory here: the test panics when
# /usr/bin/python3 is missing. About 20 s on 2 cores once the test binary is built.
set -euo pipefail
cd "$(dirname "$0")/.."
export DKIM_RELAY_REQUIRE_DKIMPY=1
export FROM_DIFF_CASES="${FROM_DIFF_CASES:-30000}"
echo "== From differential: ${FROM_DIFF_CASES} generated values + corpus vs Python email.headerregistry"
cargo test --locked --test it -- from_policy::generated_from_values_match_python \
    from_policy::collected_hostile_from_values_match_python_and_their_pinned_outcome --nocapture 2>&1 \
    | grep -E "from differential|test result|panicked|parse differently|^\"" || { echo "From differential failed"; exit 1; }
