//! `sso-operator dev`: validation and the broker from a manifest folder.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use url::Url;

use super::{CliError, CliResult, Verdict, args, runtime};
use crate::dev::{self, DevOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Files or folders with IdentityProvider and Secret manifests.
    #[arg(short = 'f', long = "filename", default_value = "examples/local")]
    paths: Vec<PathBuf>,
    /// Address the broker listens on.
    #[arg(long, default_value = "127.0.0.1:4180")]
    listen: SocketAddr,
    /// Public base URL (default: http://<listen>).
    #[arg(long)]
    public_url: Option<Url>,
    #[command(flatten)]
    manifests: args::Manifests,
    /// Re-validate against the live providers this often, in seconds (at
    /// least 5).
    #[arg(long, default_value_t = 30, value_parser = at_least_5)]
    revalidate: u64,
    /// Refresh sessions with their refresh token after this many
    /// seconds (0 = off).
    #[arg(long, default_value_t = 0)]
    session_refresh: i64,
    #[command(flatten)]
    http: args::ProviderHttp,
    #[command(flatten)]
    forward_auth: args::ForwardAuth,
    #[command(flatten)]
    domains: args::DomainChecks,
}

pub async fn run(a: Args, log_json: bool) -> CliResult {
    runtime::init_logging(log_json);
    let public_url = a.public_url.unwrap_or_else(|| {
        Url::parse(&format!("http://{}", a.listen)).expect("a socket address makes a URL")
    });
    let verifier = a
        .domains
        .verifier("dev makes one per run unless --domain-key-file names one")
        .map_err(CliError::CannotStart)?;
    if verifier.key.get().is_none() {
        // One per run: the records shown change when dev restarts.
        let _ = verifier
            .key
            .set(crate::broker::provider::random_token(32).into_bytes());
    }
    let opts = DevOptions {
        domains: std::sync::Arc::new(verifier),
        paths: a.paths,
        listen: a.listen,
        public_url,
        namespace: a.manifests.namespace,
        revalidate: Duration::from_secs(a.revalidate),
        http: a.http.settings_with_loopback(),
        session_refresh: a.session_refresh,
        unscoped: a.forward_auth.unscoped(),
    };
    let listener = runtime::listen(a.listen).await?;
    dev::run(opts, listener)
        .await
        .map(|()| Verdict::Done)
        .map_err(|e| CliError::Stopped(e.to_string()))
}

fn at_least_5(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n >= 5 => Ok(n),
        Ok(n) => Err(format!("{n} s is too often; use 5 or more")),
        Err(e) => Err(e.to_string()),
    }
}
