//! Inputs found by the fuzz targets (`scripts/fuzz.sh`) or written to
//! pin the same edge, each once a crash: now refused with a reason.

use sso_test_support as common;

use common::broker::provider;
use serde_json::{Map, Value, json};
use sso_operator::{broker::error::Reason, oidc::verify::check_claims};

fn claims(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// `exp` and `iat` at the ends of the i64 range (or beyond, as floats):
/// the skew arithmetic in the refusal messages overflowed.
#[test]
fn extreme_exp_and_iat_are_refused_not_overflowed() {
    let cfg = provider(
        "team/x",
        "https://idp.example.com",
        "https://sso.example.com",
        ["/a", "/t", "/u", "/j", "/e"],
        "client",
        Some("s"),
    );
    let now = 1_800_000_000;
    let base = json!({"iss": "https://idp.example.com", "aud": "client", "sub": "a", "nonce": "n"});
    for (exp, iat, reason) in [
        (json!(i64::MIN), json!(now), Reason::TokenExpired),
        (json!(-1e300), json!(now), Reason::TokenExpired),
        (json!(now + 60), json!(i64::MAX), Reason::IssuedInFuture),
        (json!(now + 60), json!(1e300), Reason::IssuedInFuture),
    ] {
        let mut c = claims(base.clone());
        c.insert("exp".into(), exp.clone());
        c.insert("iat".into(), iat.clone());
        let r = check_claims(&c, &cfg.expected(Some("n")), now).expect_err("refused");
        assert_eq!(r.reason, reason, "exp {exp}, iat {iat}: {}", r.message);
    }
    // The far end of the other side: extreme `now` values do not panic.
    let mut c = claims(base);
    c.insert("exp".into(), json!(i64::MAX));
    c.insert("iat".into(), json!(i64::MIN));
    assert!(check_claims(&c, &cfg.expected(Some("n")), i64::MIN).is_ok());
}
