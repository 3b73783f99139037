//! Who may reach an app: allow and deny rules over a session's identity.
//!
//! A rule lists users, emails, email domains, groups and claim values; it
//! matches when every list it sets has a match (lists are ANDed, the values
//! of one list ORed). A rule that sets nothing matches nobody (admission
//! refuses it, so "everyone" is never an accident). Deny rules are checked
//! first and win; then the first matching allow rule admits; no matching
//! allow rule refuses.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The parts of a session a rule can look at.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    pub user: &'a str,
    pub email: Option<&'a str>,
    pub groups: &'a [String],
    /// Claims kept for rules (from the ID token or userinfo).
    pub claims: &'a Map<String, Value>,
    /// The email domains the session's provider has verified.
    pub verified_domains: &'a [String],
}

/// One claim and the values that match it. A string claim matches when it
/// equals one of the values; an array claim when any string element does;
/// a boolean or number by its JSON text (`true`, `42`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRule {
    pub name: String,
    pub values: Vec<String>,
}

/// One allow or deny rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Usernames as mapped by the provider (exact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Emails (compared case-insensitively).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    /// Email domains (`example.com`: exactly that domain, case-insensitive;
    /// subdomains are other domains).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email_domains: Vec<String>,
    /// `email_domains` match whatever provider vouches for the email; by
    /// default only the provider that verified the domain is believed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any_provider_domain: bool,
    /// Group names (exact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Claim values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<ClaimRule>,
}

impl Rule {
    /// Whether the rule sets nothing (and so matches nobody).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.emails.is_empty()
            && self.email_domains.is_empty()
            && self.groups.is_empty()
            && self.claims.is_empty()
    }

    pub fn matches(&self, id: &Identity<'_>) -> bool {
        if self.is_empty() {
            return false;
        }
        let email = id.email.map(str::to_ascii_lowercase);
        let domain = email
            .as_deref()
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d);
        (self.users.is_empty() || self.users.iter().any(|u| u == id.user))
            && (self.emails.is_empty()
                || email
                    .as_deref()
                    .is_some_and(|e| self.emails.iter().any(|x| x.eq_ignore_ascii_case(e))))
            && (self.email_domains.is_empty()
                || domain.is_some_and(|d| {
                    self.email_domains
                        .iter()
                        .any(|x| x.trim_start_matches('@').eq_ignore_ascii_case(d))
                        && (self.any_provider_domain || id.verified_domains.iter().any(|v| v == d))
                }))
            && (self.groups.is_empty() || self.groups.iter().any(|g| id.groups.contains(g)))
            && self
                .claims
                .iter()
                .all(|c| claim_matches(id.claims.get(&c.name), &c.values))
    }
}

fn claim_matches(claim: Option<&Value>, values: &[String]) -> bool {
    let one = |v: &Value| match v {
        Value::String(s) => values.iter().any(|x| x == s),
        Value::Bool(_) | Value::Number(_) => {
            let text = v.to_string();
            values.contains(&text)
        }
        _ => false,
    };
    match claim {
        Some(Value::Array(items)) => items.iter().any(one),
        Some(v) => one(v),
        None => false,
    }
}

/// A policy's rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<Rule>,
}

/// What the rules say about one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Admitted by allow rule `index` (0-based).
    Allow { index: usize },
    /// Refused by deny rule `index`.
    Denied { index: usize },
    /// No allow rule matches.
    NoAllowMatches,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// Why, for the refusal page and the log (names no secret).
    pub fn explain(&self) -> String {
        match self {
            Decision::Allow { index } => format!("allowed by rules.allow[{index}]"),
            Decision::Denied { index } => format!("denied by rules.deny[{index}]"),
            Decision::NoAllowMatches => "no rule in rules.allow admits this user".into(),
        }
    }
}

impl Rules {
    /// Deny wins; then the first matching allow; else refused.
    pub fn decide(&self, id: &Identity<'_>) -> Decision {
        if let Some(index) = self.deny.iter().position(|r| r.matches(id)) {
            return Decision::Denied { index };
        }
        match self.allow.iter().position(|r| r.matches(id)) {
            Some(index) => Decision::Allow { index },
            None => Decision::NoAllowMatches,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn rule(f: impl FnOnce(&mut Rule)) -> Rule {
        let mut r = Rule::default();
        f(&mut r);
        r
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn rules_match_as_documented() {
        let groups = s(&["eng", "oncall"]);
        let c =
            claims(json!({"dept": "r&d", "roles": ["viewer", "admin"], "mfa": true, "level": 3}));
        let verified = s(&["team-a.example.com"]);
        let alice = Identity {
            user: "alice",
            email: Some("Alice@Team-A.example.com"),
            groups: &groups,
            claims: &c,
            verified_domains: &verified,
        };
        #[rustfmt::skip]
        let rows: Vec<(&str, Rule, bool)> = vec![
            ("an empty rule matches nobody", Rule::default(), false),
            ("user", rule(|r| r.users = s(&["alice"])), true),
            ("user is exact", rule(|r| r.users = s(&["Alice"])), false),
            ("email, any case", rule(|r| r.emails = s(&["alice@team-a.example.com"])), true),
            ("email domain", rule(|r| r.email_domains = s(&["team-a.example.com"])), true),
            ("email domain with @", rule(|r| r.email_domains = s(&["@TEAM-A.example.com"])), true),
            ("parent domain is another domain", rule(|r| r.email_domains = s(&["example.com"])), false),
            ("group, any of", rule(|r| r.groups = s(&["admins", "oncall"])), true),
            ("group missing", rule(|r| r.groups = s(&["admins"])), false),
            ("string claim", rule(|r| r.claims = vec![ClaimRule { name: "dept".into(), values: s(&["r&d"]) }]), true),
            ("array claim, any element", rule(|r| r.claims = vec![ClaimRule { name: "roles".into(), values: s(&["admin"]) }]), true),
            ("boolean claim by its JSON text", rule(|r| r.claims = vec![ClaimRule { name: "mfa".into(), values: s(&["true"]) }]), true),
            ("number claim by its JSON text", rule(|r| r.claims = vec![ClaimRule { name: "level".into(), values: s(&["3"]) }]), true),
            ("absent claim", rule(|r| r.claims = vec![ClaimRule { name: "tier".into(), values: s(&["gold"]) }]), false),
            ("lists are ANDed", rule(|r| { r.users = s(&["alice"]); r.groups = s(&["admins"]); }), false),
            ("lists are ANDed, all match", rule(|r| { r.users = s(&["alice"]); r.groups = s(&["eng"]); }), true),
            ("every claim rule must match", rule(|r| r.claims = vec![
                ClaimRule { name: "dept".into(), values: s(&["r&d"]) },
                ClaimRule { name: "mfa".into(), values: s(&["false"]) },
            ]), false),
        ];
        for (name, r, want) in rows {
            assert_eq!(r.matches(&alice), want, "{name}");
        }
        let no_email = Identity {
            email: None,
            ..alice
        };
        assert!(!rule(|r| r.email_domains = s(&["team-a.example.com"])).matches(&no_email));
        // A provider that has not verified the domain is not believed,
        // unless the rule says any provider may vouch.
        let unverified = Identity {
            verified_domains: &[],
            ..alice
        };
        assert!(!rule(|r| r.email_domains = s(&["team-a.example.com"])).matches(&unverified));
        let any = rule(|r| {
            r.email_domains = s(&["team-a.example.com"]);
            r.any_provider_domain = true;
        });
        assert!(any.matches(&unverified));
    }

    #[test]
    fn deny_wins_and_no_allow_refuses() {
        let groups = s(&["eng"]);
        let c = Map::new();
        let id = |user: &'static str| Identity {
            user,
            email: None,
            groups: &groups,
            claims: &c,
            verified_domains: &[],
        };
        let rules = Rules {
            allow: vec![
                rule(|r| r.groups = s(&["eng"])),
                rule(|r| r.users = s(&["mallory"])),
            ],
            deny: vec![rule(|r| r.users = s(&["mallory"]))],
        };
        assert_eq!(rules.decide(&id("alice")), Decision::Allow { index: 0 });
        assert_eq!(rules.decide(&id("mallory")), Decision::Denied { index: 0 });
        let none = Rules::default();
        assert_eq!(
            none.decide(&id("alice")),
            Decision::NoAllowMatches,
            "deny by default"
        );
        assert!(!none.decide(&id("alice")).is_allowed());
        assert_eq!(
            Decision::Denied { index: 0 }.explain(),
            "denied by rules.deny[0]"
        );
    }
}
