#!/usr/bin/env bash
# Faults: one provider's IdP goes down, hangs beyond the timeouts, answers
# garbage and rotates its keys while two healthy providers take logins and
# forward-auth, and the broker config is hot reloaded every 50 ms. Zero
# failed requests on the healthy providers, each fault refused for its own
# reason, the victim back after each. (Also part of the test command.)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --locked --release --test load -- --exact faults_on_one_idp_leave_the_others_untouched --nocapture
