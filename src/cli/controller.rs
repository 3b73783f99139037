//! `sso-operator controller`: the IdentityProvider controller.

use std::sync::Arc;

use super::{CliError, CliResult, Verdict, args, runtime};
use crate::{
    controller::{
        self, Context, Settings,
        leader::{self, LeaseConfig},
        program::ProgramSet,
        validate::Env,
    },
    metrics::Metrics,
    oidc::discovery::{CacheTtl, DiscoveryCache},
};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    operator: args::Operator,
    /// Name of the broker config Secret the controller writes.
    #[arg(long, default_value = "sso-operator-broker-config")]
    broker_config_secret: String,
    /// Watch IdentityProviders in this namespace only (default: all).
    #[arg(long)]
    watch_namespace: Option<String>,
    /// Only watch Secrets matching this label selector.
    #[arg(long)]
    secret_label_selector: Option<String>,
    /// Watch Secrets only in these namespaces (comma-separated), for
    /// installs that grant Secret reads there only (Helm:
    /// rbac.secretNamespaces). Default: all namespaces.
    #[arg(long, value_delimiter = ',')]
    secret_namespaces: Vec<String>,
    /// Base of the forward-auth URLs AccessPolicies show in status.authURL
    /// (`<base>/<namespace>/<name>`): the broker as the proxies reach it,
    /// e.g. its in-cluster Service (Helm sets this). Default:
    /// `<public-url>/oauth/auth`.
    #[arg(long)]
    auth_url_base: Option<String>,
    #[command(flatten)]
    serve: args::Serve,
    #[command(flatten)]
    http: args::ProviderHttp,
    /// The broker's session keys Secret (in --namespace): the controller
    /// generates a key into it when it has none. Omit when the keys are
    /// brought in a Secret of your own.
    #[arg(long)]
    session_keys_secret: Option<String>,
    /// The Secret (in --namespace) holding the key verified domains' TXT
    /// records are made with (key `domain-key`): generated into it when
    /// empty. Without it, listed domains stay Pending (KeyNotReady).
    #[arg(long)]
    domain_key_secret: Option<String>,
    #[command(flatten)]
    dns: args::Dns,
    /// Program at most this many IdentityProviders per namespace, the
    /// oldest first; the others report NamespaceLimitReached (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_providers_per_namespace: usize,
    /// Reconcile only while holding a Lease, so several replicas can run
    /// (one leads, the others wait to take over).
    #[arg(long, env = "SSO_LEADER_ELECTION")]
    leader_election: bool,
    /// Name of the Lease (in --namespace).
    #[arg(long, default_value = "sso-operator-controller")]
    lease_name: String,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

pub async fn run(a: Args, log_json: bool) -> CliResult {
    runtime::init_logging(log_json);
    let discovery = Arc::new(DiscoveryCache::new(a.http.settings(), CacheTtl::default()));
    let metrics = Arc::new(Metrics::new(
        discovery.fetches.clone(),
        discovery.hits.clone(),
    ));
    let client = runtime::kube_client("").await?;
    runtime::spawn_metrics(a.serve.metrics_addr, metrics.clone());
    let ns = a.operator.namespace;
    let auth_base = a.auth_url_base.unwrap_or_else(|| {
        format!(
            "{}/oauth/auth",
            a.operator.public_url.as_str().trim_end_matches('/')
        )
    });
    let mut ctx = Context::new(
        client.clone(),
        metrics,
        discovery,
        Arc::new(ProgramSet::default()),
        Env {
            public_url: a.operator.public_url,
        },
    );
    ctx.max_per_namespace = a.max_providers_per_namespace;
    ctx.domains = a.dns.verifier();
    let ctx = Arc::new(ctx);
    let settings = Settings {
        namespace: ns.clone(),
        broker_config_secret: a.broker_config_secret,
        watch_namespace: a.watch_namespace,
        secret_label_selector: a.secret_label_selector,
        secret_namespaces: a.secret_namespaces,
        auth_base,
        session_keys_secret: a.session_keys_secret,
        domain_key_secret: a.domain_key_secret,
    };
    let work = controller::run(client.clone(), ctx, settings);
    let outcome = if a.leader_election {
        let identity = a
            .identity
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("sso-operator-{}", std::process::id()));
        let cfg = LeaseConfig::new(&ns, &a.lease_name, &identity);
        let (leading, _) = tokio::sync::watch::channel(false);
        tokio::select! {
            r = leader::run(kube::Api::namespaced(client, &ns), cfg, leading, work) => match r {
                Ok(r) => r,
                Err(e) => Err(crate::Error::Startup(e.to_string())),
            },
            () = runtime::shutdown_signal() => Ok(()),
        }
    } else {
        work.await
    };
    outcome
        .map(|()| Verdict::Done)
        .map_err(|e| CliError::Stopped(format!("controller stopped: {e}")))
}
