//! The subcommands that print something and exit: `crd`, `public-jwk`.

use std::path::PathBuf;

use kube::CustomResourceExt;

use super::{CliError, CliResult, Verdict};
use crate::{
    api::{IdentityProvider, policy::AccessPolicy},
    oidc::assertion::ClientKey,
};

#[derive(clap::Args)]
pub struct CrdArgs {
    /// Print only this CRD (by plural name: identityproviders,
    /// accesspolicies); all of them when omitted.
    only: Option<String>,
}

/// `sso-operator crd`: every CRD, as one YAML stream.
pub fn crd(a: &CrdArgs) -> CliResult {
    let all = [IdentityProvider::crd(), AccessPolicy::crd()];
    let chosen: Vec<_> = all
        .iter()
        .filter(|c| a.only.as_deref().is_none_or(|o| c.spec.names.plural == o))
        .collect();
    if chosen.is_empty() {
        return Err(CliError::CannotStart(format!(
            "no CRD named {:?}: identityproviders or accesspolicies",
            a.only.as_deref().unwrap_or_default()
        )));
    }
    let mut out = String::new();
    for crd in chosen {
        let yaml = serde_yaml::to_string(crd)
            .map_err(|e| CliError::CannotStart(format!("the CRD does not serialize: {e}")))?;
        if a.only.is_none() {
            out.push_str("---\n");
        }
        out.push_str(&yaml);
    }
    print!("{out}");
    Ok(Verdict::Done)
}

#[derive(clap::Args)]
pub struct PublicJwkArgs {
    /// The PEM private key file (PKCS#8 RSA or EC P-256, or PKCS#1 RSA).
    #[arg(long)]
    key_file: PathBuf,
}

/// `sso-operator public-jwk`.
pub fn public_jwk(a: &PublicJwkArgs) -> CliResult {
    let key = std::fs::read_to_string(&a.key_file)
        .map_err(|e| e.to_string())
        .and_then(|pem| ClientKey::from_pem(&pem))
        .map_err(|e| CliError::CannotStart(format!("{}: {e}", a.key_file.display())))?;
    let set = serde_json::json!({"keys": [key.public_jwk()]});
    println!(
        "{}",
        serde_json::to_string_pretty(&set).expect("a JSON value serializes")
    );
    Ok(Verdict::Done)
}
