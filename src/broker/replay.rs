//! Login states already used at this replica. A login cookie and its
//! callback URL open only once: a replayed callback (the same browser
//! reloading it, or someone who captured both) would otherwise send one
//! authenticated token request to the IdP per replay for the ten minutes
//! the login cookie lives, spending the broker's rate limits and lockouts
//! at the IdP. Bounded: entries leave when their login would have expired,
//! and past the cap the oldest leave first.

use std::{
    collections::{HashSet, VecDeque},
    sync::Mutex,
};

/// Most states remembered: logins completed within a login's lifetime.
pub const USED_STATES_CAP: usize = 100_000;

pub struct UsedStates {
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    used: HashSet<String>,
    /// When each entry may be forgotten, oldest first.
    order: VecDeque<(i64, String)>,
}

impl UsedStates {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Records `state` as used until `forget_at`; `false` when it already
    /// was.
    pub fn first_use(&self, state: &str, forget_at: i64, now: i64) -> bool {
        let mut i = self.inner.lock().expect("not poisoned");
        while i.order.front().is_some_and(|(at, _)| *at <= now) {
            let (_, s) = i.order.pop_front().expect("front exists");
            i.used.remove(&s);
        }
        if i.used.contains(state) {
            return false;
        }
        while i.order.len() >= self.cap {
            let (_, s) = i.order.pop_front().expect("not empty");
            i.used.remove(&s);
        }
        i.used.insert(state.to_string());
        i.order.push_back((forget_at, state.to_string()));
        true
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("not poisoned").order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_opens_once_until_it_would_have_expired() {
        let u = UsedStates::new(10);
        assert!(u.first_use("a", 600, 0));
        assert!(!u.first_use("a", 600, 1), "replayed");
        assert!(u.first_use("b", 601, 1));
        // At 600 "a" is forgotten (its login cookie expired too).
        assert!(u.first_use("a", 1200, 600));
        assert_eq!(u.len(), 2);
    }

    #[test]
    fn memory_is_bounded() {
        let u = UsedStates::new(1000);
        for n in 0..50_000 {
            assert!(u.first_use(&n.to_string(), 600, 0));
        }
        assert_eq!(u.len(), 1000);
        assert!(!u.first_use("49999", 600, 0), "the newest are kept");
    }
}
