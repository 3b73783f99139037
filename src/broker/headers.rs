//! The identity headers a forward-auth answer carries to the app.
//!
//! All four are set on every 200, empty when the session has no value, so
//! a client cannot slip in its own through a proxy that copies only the
//! headers present in the answer (Envoy's `headersToBackend`). Values are
//! percent-encoded where a header could not carry them or a reader could
//! misread them: `%`, control characters and non-ASCII bytes (UTF-8) in
//! every value, and `,` inside a group name, so the groups header splits
//! unambiguously on `,` and each part percent-decodes to the name.

use std::borrow::Cow;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::session::Session;
use crate::api::policy::IdentityHeader;

pub const USER: HeaderName = HeaderName::from_static("x-auth-request-user");
pub const EMAIL: HeaderName = HeaderName::from_static("x-auth-request-email");
pub const GROUPS: HeaderName = HeaderName::from_static("x-auth-request-groups");
pub const PROVIDER: HeaderName = HeaderName::from_static("x-auth-request-provider");

/// Percent-encodes what a header value cannot carry or could be misread:
/// `%`, bytes below space or from DEL up, and `,` when `comma`. Borrows
/// when nothing needs encoding (the common case, on the forward-auth path).
pub fn encode(value: &str, comma: bool) -> Cow<'_, str> {
    let needs = |b: u8| b == b'%' || !(0x20..0x7f).contains(&b) || (comma && b == b',');
    if !value.bytes().any(needs) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if needs(b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    Cow::Owned(out)
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("encoded values are visible ASCII or spaces")
}

/// Sets the four identity headers from `s`.
pub fn set_identity(h: &mut HeaderMap, s: &Session) {
    h.insert(USER, value(&encode(&s.user, false)));
    h.insert(
        EMAIL,
        value(&encode(s.email.as_deref().unwrap_or(""), false)),
    );
    let groups: Vec<Cow<'_, str>> = s.groups.iter().map(|g| encode(g, true)).collect();
    h.insert(GROUPS, value(&groups.join(",")));
    h.insert(PROVIDER, value(&encode(&s.provider, false)));
}

/// The identity headers `shown` with their values; the others empty (so
/// a client cannot supply its own through the proxy).
pub fn set_identity_only(h: &mut HeaderMap, s: &Session, shown: &[IdentityHeader]) {
    set_identity(h, s);
    for (header, name) in [
        (IdentityHeader::User, USER),
        (IdentityHeader::Email, EMAIL),
        (IdentityHeader::Groups, GROUPS),
        (IdentityHeader::Provider, PROVIDER),
    ] {
        if !shown.contains(&header) {
            h.insert(name, HeaderValue::from_static(""));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_encoded_only_where_needed() {
        assert_eq!(encode("alice", false), "alice");
        assert_eq!(encode("alice@example.com", false), "alice@example.com");
        assert_eq!(encode("José", false), "Jos%C3%A9");
        assert_eq!(encode("50% off", false), "50%25 off");
        assert_eq!(encode("a\r\nX-Evil: 1", false), "a%0D%0AX-Evil: 1");
        assert_eq!(encode("sre, on-call", true), "sre%2C on-call");
        assert_eq!(encode("sre, on-call", false), "sre, on-call");
    }

    #[test]
    fn every_header_is_set_and_groups_split_unambiguously() {
        let s = Session {
            provider: "team/corp".into(),
            sub: "1".into(),
            user: "José".into(),
            email: None,
            groups: vec!["a,b".into(), "c".into(), "100%".into()],
            groups_truncated: false,
            issued_at: 0,
            expires_at: 1,
            validated_at: 0,
            refresh_token: None,
            claims: Default::default(),
            claims_looked_for: Vec::new(),
            issuer: String::new(),
            client_id: String::new(),
        };
        let mut h = HeaderMap::new();
        // A client's own value is replaced, never kept beside ours.
        h.insert(EMAIL, HeaderValue::from_static("forged@example.com"));
        set_identity(&mut h, &s);
        assert_eq!(h[&USER], "Jos%C3%A9");
        assert_eq!(h[&EMAIL], "", "set even when absent");
        assert_eq!(h.get_all(&EMAIL).iter().count(), 1);
        assert_eq!(h[&GROUPS], "a%2Cb,c,100%25");
        assert_eq!(h[&PROVIDER], "team/corp");
        let decoded: Vec<String> = h[&GROUPS]
            .to_str()
            .unwrap()
            .split(',')
            .map(|g| {
                url::form_urlencoded::parse(format!("x={}", g.replace('+', "%2B")).as_bytes())
                    .next()
                    .unwrap()
                    .1
                    .into_owned()
            })
            .collect();
        assert_eq!(decoded, s.groups);
    }
}
