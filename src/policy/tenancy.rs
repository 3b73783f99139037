//! Whether a provider may serve a policy in another namespace.
//!
//! The provider says which namespaces it admits, as a Gateway API listener
//! says which namespaces may attach routes: `Same` (the default: only
//! policies in the provider's own namespace), `All`, or `Selector` (the
//! policy's namespace must carry labels matching a label selector). A
//! policy in the provider's own namespace is always admitted.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Which namespaces a provider admits policies from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum From {
    #[default]
    Same,
    All,
    Selector,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AllowedNamespaces {
    pub from: From,
    /// Required with `Selector`.
    pub selector: Option<LabelSelector>,
}

/// Why a provider does not admit a policy's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotAdmitted(pub String);

/// Decides for a policy in `policy_ns` (whose labels are `labels`) using a
/// provider in `provider_ns`.
pub fn admits(
    allowed: &AllowedNamespaces,
    provider_ns: &str,
    policy_ns: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), NotAdmitted> {
    if policy_ns == provider_ns {
        return Ok(());
    }
    match allowed.from {
        From::All => Ok(()),
        From::Same => Err(NotAdmitted(format!(
            "the provider in namespace {provider_ns} admits policies from its own namespace only (spec.allowedNamespaces.from: Same)"
        ))),
        From::Selector => {
            let Some(sel) = &allowed.selector else {
                return Err(NotAdmitted(
                    "the provider's spec.allowedNamespaces.from is Selector but it has no selector"
                        .into(),
                ));
            };
            match selector_matches(sel, labels) {
                Ok(true) => Ok(()),
                Ok(false) => Err(NotAdmitted(format!(
                    "namespace {policy_ns} does not match the provider's spec.allowedNamespaces.selector"
                ))),
                Err(e) => Err(NotAdmitted(format!(
                    "the provider's spec.allowedNamespaces.selector is invalid: {e}"
                ))),
            }
        }
    }
}

/// Evaluates a label selector as Kubernetes does (all requirements ANDed;
/// an empty selector matches everything).
pub fn selector_matches(
    sel: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let mut by_expressions = true;
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(format!("{} {} needs values", e.key, e.operator));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(format!("{} {} takes no values", e.key, e.operator));
            }
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => return Err(format!("unknown operator {other:?}")),
        };
        by_expressions &= ok;
    }
    Ok(by_labels && by_expressions)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn same_namespace_is_always_admitted_and_others_only_when_the_provider_says() {
        let none = BTreeMap::new();
        let same = AllowedNamespaces::default();
        assert!(admits(&same, "corp", "corp", &none).is_ok());
        let refused = admits(&same, "corp", "tenant-b", &none).unwrap_err();
        assert!(refused.0.contains("own namespace only"), "{refused:?}");
        let all = AllowedNamespaces {
            from: From::All,
            selector: None,
        };
        assert!(admits(&all, "platform", "team-a", &none).is_ok());
        let no_selector = AllowedNamespaces {
            from: From::Selector,
            selector: None,
        };
        assert!(admits(&no_selector, "platform", "team-a", &none).is_err());
    }

    #[test]
    fn selectors_are_evaluated_as_kubernetes_does() {
        let team = labels(&[("sso.example.com/shared-okta", "yes"), ("tier", "prod")]);
        let sel = |ml: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: (!ml.is_empty()).then(|| labels(ml)),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        };
        let rows = [
            (sel(&[], vec![]), Ok(true)),
            (
                sel(&[("sso.example.com/shared-okta", "yes")], vec![]),
                Ok(true),
            ),
            (
                sel(&[("sso.example.com/shared-okta", "no")], vec![]),
                Ok(false),
            ),
            (
                sel(&[], vec![req("tier", "In", &["prod", "staging"])]),
                Ok(true),
            ),
            (sel(&[], vec![req("tier", "NotIn", &["prod"])]), Ok(false)),
            (sel(&[], vec![req("missing", "NotIn", &["x"])]), Ok(true)),
            (sel(&[], vec![req("tier", "Exists", &[])]), Ok(true)),
            (sel(&[], vec![req("tier", "DoesNotExist", &[])]), Ok(false)),
            (
                sel(
                    &[("sso.example.com/shared-okta", "yes")],
                    vec![req("tier", "In", &["dev"])],
                ),
                Ok(false),
            ),
            (sel(&[], vec![req("tier", "In", &[])]), Err(())),
            (sel(&[], vec![req("tier", "Exists", &["x"])]), Err(())),
            (sel(&[], vec![req("tier", "Matches", &["x"])]), Err(())),
        ];
        for (s, want) in rows {
            let got = selector_matches(&s, &team).map_err(|_| ());
            assert_eq!(got, want, "{s:?}");
        }
        let allowed = AllowedNamespaces {
            from: From::Selector,
            selector: Some(sel(&[("sso.example.com/shared-okta", "yes")], vec![])),
        };
        assert!(admits(&allowed, "platform", "team-a", &team).is_ok());
        let err = admits(&allowed, "platform", "team-b", &labels(&[])).unwrap_err();
        assert!(err.0.contains("does not match"), "{err:?}");
    }
}
