//! `sso-operator check`: validate manifests from files.

use std::path::{Path, PathBuf};

use url::Url;

use super::{CliError, CliResult, Verdict, args};
use crate::{
    check::{self, CheckOptions},
    dev,
};

#[derive(clap::Args)]
pub struct Args {
    /// Files or folders (every .yaml, .yml and .json below a folder).
    #[arg(short = 'f', long = "filename", required = true)]
    paths: Vec<PathBuf>,
    /// Also fetch discovery and the JWKS from the live issuers.
    #[arg(long)]
    live: bool,
    #[command(flatten)]
    manifests: args::Manifests,
    /// The broker's public base URL, for the redirect URI shown.
    #[arg(long, env = "SSO_PUBLIC_URL", default_value = "http://127.0.0.1:4180")]
    public_url: Url,
    #[command(flatten)]
    http: args::ProviderHttp,
    /// With --live: also write the broker configuration the controller
    /// would program (JSON, client secrets included) to this file, for
    /// `sso-operator broker --config-file` without a cluster.
    #[arg(long, requires = "live")]
    broker_config: Option<PathBuf>,
    #[command(flatten)]
    domains: args::DomainChecks,
}

pub async fn run(a: Args) -> CliResult {
    let opts = CheckOptions {
        paths: a.paths,
        live: a.live,
        namespace: a.manifests.namespace,
        public_url: a.public_url,
        http: a.http.settings(),
        domains: Some(std::sync::Arc::new(
            a.domains
                .verifier("pass --domain-key-file with the controller's key (Secret <release>-domain-key, key domain-key) to compute the records")
                .map_err(CliError::CannotStart)?,
        )),
    };
    let report = check::run(&opts)
        .await
        .map_err(|e| CliError::CannotStart(e.to_string()))?;
    print!("{}", report.render());
    if let Some(path) = a.broker_config {
        let config = dev::config_from_report(&report);
        let json = serde_json::to_vec_pretty(&config).expect("the broker config serializes");
        write_private(&path, &json)
            .map_err(|e| CliError::CannotStart(format!("writing {}: {e}", path.display())))?;
    }
    Ok(if report.passed() {
        Verdict::Done
    } else {
        Verdict::Failed
    })
}

/// Writes a file only its owner can read (it holds client secrets).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}
