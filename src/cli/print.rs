//! The subcommands that print something and exit: `crd`, `public-jwk`.

use std::path::PathBuf;

use kube::CustomResourceExt;

use super::{CliError, CliResult, Verdict};
use crate::{api::IdentityProvider, oidc::assertion::ClientKey};

/// `sso-operator crd`.
pub fn crd() -> CliResult {
    let yaml = serde_yaml::to_string(&IdentityProvider::crd())
        .map_err(|e| CliError::CannotStart(format!("the CRD does not serialize: {e}")))?;
    print!("{yaml}");
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
