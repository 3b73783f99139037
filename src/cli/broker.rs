//! `sso-operator broker`: the login broker.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::{CliError, CliResult, Verdict, args, runtime};
use crate::broker::{
    Broker, BrokerSettings,
    redirect::RedirectPolicy,
    source::{self, Input, Origin},
};

#[derive(clap::Args)]
pub struct Args {
    /// Address the broker listens on.
    #[arg(long, env = "SSO_BROKER_LISTEN", default_value = "0.0.0.0:4180")]
    listen: SocketAddr,
    #[command(flatten)]
    operator: args::Operator,
    /// Name of the broker config Secret the controller writes (watched).
    #[arg(long, default_value = "sso-operator-broker-config")]
    config_secret: String,
    /// Read the broker config from this JSON file instead (polled).
    #[arg(long)]
    config_file: Option<PathBuf>,
    /// Name of the Secret holding the session keys (key `session-keys`,
    /// one key per line, newest first).
    #[arg(long, default_value = "sso-operator-session-keys")]
    session_keys_secret: String,
    /// Read the session keys from this file instead (polled).
    #[arg(long)]
    session_keys_file: Option<PathBuf>,
    /// Domains `rd` may point to after login (`.example.com` = the
    /// domain and its subdomains). Local paths are always allowed.
    #[arg(long, value_delimiter = ',', env = "SSO_ALLOWED_REDIRECT_DOMAINS")]
    allowed_redirect_domains: Vec<String>,
    /// `Domain` of the session cookie, to share it across subdomains.
    #[arg(long, env = "SSO_COOKIE_DOMAIN")]
    cookie_domain: Option<String>,
    /// Session lifetime in seconds (absolute: a refresh does not extend it).
    #[arg(long, default_value_t = 43200)]
    session_lifetime: i64,
    /// Re-validate sessions at the IdP with their refresh token when
    /// their last validation is this many seconds old (revoked users
    /// and changed groups then take effect within it). 0 = off. Needs a
    /// proxy that passes the forward-auth answer's Set-Cookie on.
    #[arg(long, default_value_t = 0, env = "SSO_SESSION_REFRESH")]
    session_refresh: i64,
    #[command(flatten)]
    forward_auth: args::ForwardAuth,
    #[command(flatten)]
    serve: args::Serve,
    #[command(flatten)]
    http: args::ProviderHttp,
}

/// How often a config or key file is polled for changes.
const FILE_POLL: Duration = Duration::from_secs(2);

pub async fn run(a: Args, log_json: bool) -> CliResult {
    runtime::init_logging(log_json);
    let broker = Broker::new(BrokerSettings {
        public_url: a.operator.public_url,
        cookie_domain: a.cookie_domain,
        session_lifetime: a.session_lifetime,
        session_refresh: a.session_refresh,
        redirect: RedirectPolicy {
            allowed_domains: a.allowed_redirect_domains,
            allow_http: false,
        },
        http: a.http.settings(),
        unscoped: a.forward_auth.unscoped(),
    });
    // A client only when one of the two inputs comes from a Secret.
    let client = match (&a.config_file, &a.session_keys_file) {
        (Some(_), Some(_)) => None,
        _ => Some(
            runtime::kube_client(
                "; use --config-file and --session-keys-file to run without a cluster",
            )
            .await?,
        ),
    };
    let ns = a.operator.namespace;
    for (input, file, secret) in [
        (Input::Config, a.config_file, a.config_secret),
        (Input::Keys, a.session_keys_file, a.session_keys_secret),
    ] {
        let from = match (file, &client) {
            (Some(path), _) => Origin::File(path),
            (None, Some(c)) => Origin::Secret {
                client: c.clone(),
                namespace: ns.clone(),
                name: secret,
            },
            (None, None) => unreachable!("a client exists when no file is given"),
        };
        tokio::spawn(source::watch(broker.clone(), input, from, FILE_POLL));
    }
    runtime::spawn_metrics(a.serve.metrics_addr, broker.metrics.clone());
    let listener = runtime::listen(a.listen).await?;
    tracing::info!(listen = %a.listen, "broker listening");
    match &broker.settings.unscoped {
        crate::broker::Unscoped::Deny => tracing::info!(
            "forward-auth at /oauth/auth admits nobody; apps ask their AccessPolicy's URL, /oauth/auth/<namespace>/<name> (--default-policy or --any-provider-auth change this)"
        ),
        crate::broker::Unscoped::Policy(key) => tracing::info!(
            policy = %key,
            "forward-auth at /oauth/auth answers as the default AccessPolicy"
        ),
        crate::broker::Unscoped::AnyProvider => tracing::warn!(
            "forward-auth at /oauth/auth admits any provider's session (--any-provider-auth): every provider on this broker can sign users in to every app that asks /oauth/auth"
        ),
    }
    axum::serve(listener, broker.router())
        .with_graceful_shutdown(runtime::shutdown_signal())
        .await
        .map(|()| Verdict::Done)
        .map_err(|e| CliError::Stopped(format!("broker stopped: {e}")))
}
