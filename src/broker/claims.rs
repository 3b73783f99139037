//! From verified claims to an identity, and the provider's access rules.
//! Pure functions: the callback feeds them the ID token's claims (merged
//! with userinfo), forward-auth re-checks the rules on every request so a
//! tightened rule applies to existing sessions at once.

use serde_json::{Map, Value};

use super::error::{Reason, Refusal};
use crate::{api::ClaimMapping, config::ProgrammedProvider};

/// Who logged in, as the headers and rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub sub: String,
    pub user: String,
    pub email: Option<String>,
    /// `Some(true)` only for a JSON boolean `true`.
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// Every claim (the ID token's, with userinfo's when fetched), for the
    /// claims AccessPolicy rules look at.
    pub raw: Map<String, Value>,
}

impl Identity {
    /// The claims named in `names` (dotted names walk nested objects),
    /// under those names, for the session.
    pub fn select(&self, names: &std::collections::BTreeSet<String>) -> Map<String, Value> {
        names
            .iter()
            .filter_map(|n| Some((n.clone(), lookup(&self.raw, n)?.clone())))
            .collect()
    }
}

/// Looks a claim up by name; a name with dots that is not itself a claim
/// walks nested objects (`realm_access.roles`).
pub fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Maps claims to an identity. `sub` must be a non-empty string.
pub fn map_claims(
    claims: &Map<String, Value>,
    mapping: &ClaimMapping,
) -> Result<Identity, Refusal> {
    let sub = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(Refusal::new(
                Reason::MissingSub,
                "the ID token has no \"sub\" claim",
            ));
        }
    };
    let user = lookup(claims, &mapping.username)
        .and_then(as_text)
        .unwrap_or_else(|| sub.clone());
    let email = lookup(claims, &mapping.email).and_then(as_text);
    let email_verified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => Some(*b),
        // A string "true" is not the boolean the spec defines; counting it
        // would let a provider's free-text attribute pass as verification.
        Some(_) => Some(false),
        None => None,
    };
    let name = lookup(claims, &mapping.name).and_then(as_text);
    let groups = match lookup(claims, &mapping.groups) {
        Some(Value::Array(items)) => items.iter().filter_map(as_text).collect(),
        Some(v) => as_text(v).into_iter().collect(),
        None => Vec::new(),
    };
    Ok(Identity {
        sub,
        user,
        email,
        email_verified,
        name,
        groups,
        raw: claims.clone(),
    })
}

/// Whether the login needs userinfo: the ID token lacks the email or the
/// groups claim the provider maps.
pub fn needs_userinfo(claims: &Map<String, Value>, mapping: &ClaimMapping) -> bool {
    lookup(claims, &mapping.email).is_none() || lookup(claims, &mapping.groups).is_none()
}

/// Merges userinfo claims into the ID token's: the ID token wins where both
/// have a claim (it is signed; userinfo is not).
pub fn merge_userinfo(claims: &mut Map<String, Value>, userinfo: Map<String, Value>) {
    for (k, v) in userinfo {
        claims.entry(k).or_insert(v);
    }
}

/// The email verification rule, checked at login.
pub fn check_verified_email(id: &Identity, provider: &ProgrammedProvider) -> Result<(), Refusal> {
    if !provider.require_verified_email {
        return Ok(());
    }
    match id.email_verified {
        Some(true) => Ok(()),
        Some(false) => Err(Refusal::new(
            Reason::UnverifiedEmail,
            format!(
                "{} says the email address {} is not verified; verify it with the identity provider and log in again",
                provider.display_name,
                id.email.as_deref().unwrap_or("(none)")
            ),
        )),
        None => Err(Refusal::new(
            Reason::UnverifiedEmail,
            format!(
                "{} did not say whether the email address is verified (no email_verified claim), and this provider requires verified email",
                provider.display_name
            ),
        )),
    }
}

/// The verified domain rules: an address in a domain another namespace's
/// provider verified is refused (that namespace speaks for it); a user
/// whose email is in one of the provider's listed domains signs in only
/// while that domain is verified (the provider proved by DNS that it
/// speaks for it). `owners`: each verified domain's namespace.
pub fn check_domain(
    email: Option<&str>,
    provider: &ProgrammedProvider,
    owners: &std::collections::BTreeMap<String, String>,
) -> Result<(), Refusal> {
    let Some(domain) = email.and_then(crate::domains::email_domain) else {
        return Ok(());
    };
    // A domain another namespace verified: its addresses are that
    // namespace's providers' to vouch for, not this one's (any IdP can put
    // any address in its tokens).
    if let Some(owner) = owners.get(&domain)
        && *owner != provider.namespace
    {
        return Err(Refusal::new(
            Reason::UnverifiedDomain,
            format!(
                "{domain} is verified by a provider of namespace {owner}; {} cannot vouch for its addresses",
                provider.display_name
            ),
        ));
    }
    if provider.domains.contains(&domain) && !provider.verified_domains.contains(&domain) {
        return Err(Refusal::new(
            Reason::UnverifiedDomain,
            format!(
                "{} lists {domain} but has not verified it (its TXT record is not in DNS yet, or no longer): see the IdentityProvider's status.domains",
                provider.display_name
            ),
        ));
    }
    Ok(())
}

/// What a provider says of a live session now, at every forward-auth: its
/// access lists and its verified domains (a tightened rule or a lost
/// domain applies to sessions signed in before).
pub fn provider_admits(
    s: &super::session::Session,
    provider: &ProgrammedProvider,
    owners: &std::collections::BTreeMap<String, String>,
) -> Result<(), Refusal> {
    check_access(&s.user, s.email.as_deref(), &s.groups, provider)?;
    check_domain(s.email.as_deref(), provider, owners)
}

/// The access lists. Every list that is set must pass.
pub fn check_access(
    user: &str,
    email: Option<&str>,
    groups: &[String],
    provider: &ProgrammedProvider,
) -> Result<(), Refusal> {
    if !provider.allowed_email_domains.is_empty() {
        let domain = email
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase());
        let ok = domain.as_deref().is_some_and(|d| {
            provider
                .allowed_email_domains
                .iter()
                .any(|a| a.eq_ignore_ascii_case(d))
        });
        if !ok {
            return Err(Refusal::new(
                Reason::AccessDenied,
                format!(
                    "the email address {} is not in an allowed domain",
                    email.unwrap_or("(none)")
                ),
            ));
        }
    }
    if !provider.allowed_groups.is_empty()
        && !groups.iter().any(|g| provider.allowed_groups.contains(g))
    {
        return Err(Refusal::new(
            Reason::AccessDenied,
            format!("{user} is in none of the allowed groups"),
        ));
    }
    if !provider.allowed_users.is_empty() {
        let ok = provider
            .allowed_users
            .iter()
            .any(|a| a == user || email.is_some_and(|e| a.eq_ignore_ascii_case(e)));
        if !ok {
            return Err(Refusal::new(
                Reason::AccessDenied,
                format!("{user} is not in the allowed users"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn maps_standard_claims_with_fallbacks() {
        let m = ClaimMapping::default();
        let id = map_claims(
            &claims(json!({"sub": "u1", "email": "a@x.io", "email_verified": true, "groups": ["a", 7, null]})),
            &m,
        )
        .unwrap();
        assert_eq!(id.user, "u1", "username falls back to sub");
        assert_eq!(id.email.as_deref(), Some("a@x.io"));
        assert_eq!(id.email_verified, Some(true));
        assert_eq!(id.groups, vec!["a".to_string(), "7".to_string()]);
    }

    #[test]
    fn string_true_is_not_verified_and_sub_is_required() {
        let m = ClaimMapping::default();
        let id = map_claims(&claims(json!({"sub": "u", "email_verified": "true"})), &m).unwrap();
        assert_eq!(id.email_verified, Some(false));
        let err = map_claims(&claims(json!({"email": "a@b"})), &m).unwrap_err();
        assert_eq!(err.reason, Reason::MissingSub);
        let err = map_claims(&claims(json!({"sub": ""})), &m).unwrap_err();
        assert_eq!(err.reason, Reason::MissingSub);
    }

    #[test]
    fn nested_and_single_string_groups() {
        let m = ClaimMapping {
            groups: "realm_access.roles".into(),
            ..ClaimMapping::default()
        };
        let id = map_claims(
            &claims(json!({"sub": "u", "realm_access": {"roles": ["admin"]}})),
            &m,
        )
        .unwrap();
        assert_eq!(id.groups, vec!["admin".to_string()]);
        let m = ClaimMapping {
            groups: "role".into(),
            ..ClaimMapping::default()
        };
        let id = map_claims(&claims(json!({"sub": "u", "role": "ops"})), &m).unwrap();
        assert_eq!(id.groups, vec!["ops".to_string()]);
    }

    #[test]
    fn userinfo_fills_gaps_but_never_overrides() {
        let mut c = claims(json!({"sub": "u", "email": "signed@x.io"}));
        merge_userinfo(
            &mut c,
            claims(json!({"sub": "u", "email": "other@x.io", "groups": ["g"]})),
        );
        assert_eq!(c["email"], "signed@x.io");
        assert_eq!(c["groups"], json!(["g"]));
        assert!(!needs_userinfo(&c, &ClaimMapping::default()));
    }
}
