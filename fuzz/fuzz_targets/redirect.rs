//! `rd`, the post-login and post-logout target: whatever the policy
//! accepts must keep a browser on allowed hosts.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|rd: &str| {
    let policy = common::redirect_policy();
    if let Some(target) = policy.check(rd) {
        assert!(
            common::location_is_safe(&target),
            "{rd:?} was accepted as {target:?}, which leaves the allowed hosts"
        );
    }
});
