//! `sso-operator dev`: the controller's validation and the broker together
//! on one machine, reading IdentityProvider and Secret manifests from files
//! instead of a cluster. Re-validates when a file changes and every
//! `revalidate` interval, swapping the broker's providers like the
//! controller's config Secret would.

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash as _, Hasher as _},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use tracing::{error, info};
use url::Url;

use crate::{
    Error,
    broker::{Broker, BrokerSettings, redirect::RedirectPolicy, seal::KeyRing},
    check::{self, CheckOptions, Report},
    config::BrokerConfig,
    manifest, metrics,
    oidc::discovery::HttpSettings,
};

/// Options of `sso-operator dev`.
#[derive(Clone, Debug)]
pub struct DevOptions {
    pub paths: Vec<PathBuf>,
    pub listen: SocketAddr,
    pub public_url: Url,
    pub namespace: String,
    pub revalidate: Duration,
    pub http: HttpSettings,
    /// Session refresh interval in seconds (0 = off).
    pub session_refresh: i64,
    /// What `/oauth/auth` without a policy answers.
    pub unscoped: crate::broker::Unscoped,
    /// Verifies the providers' spec.domains (key and DNS).
    pub domains: std::sync::Arc<crate::controller::domains::Verifier>,
}

/// The broker configuration a check report programs, as the controller
/// would write it (without last known good: `dev` has no history).
pub fn config_from_report(report: &Report) -> BrokerConfig {
    let mut config = BrokerConfig::default();
    for p in &report.providers {
        let Some(v) = &p.validation else { continue };
        if let Some(entry) = v.programming.entry() {
            config.providers.insert(p.key.clone(), entry.clone());
        }
        if let Some(u) = &p.unavailable {
            config.unavailable.insert(p.key.clone(), u.clone());
        }
    }
    for p in &report.policies {
        if let Some(entry) = &p.entry {
            config.policies.insert(p.key.clone(), entry.clone());
        }
    }
    config
}

fn files_fingerprint(paths: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for p in paths {
        match manifest::files(p) {
            Ok(files) => {
                for f in files {
                    f.hash(&mut h);
                    std::fs::read(&f).unwrap_or_default().hash(&mut h);
                }
            }
            Err(e) => e.to_string().hash(&mut h),
        }
    }
    h.finish()
}

/// Runs until the process ends, serving the broker on `listener`.
pub async fn run(opts: DevOptions, listener: tokio::net::TcpListener) -> Result<(), Error> {
    let broker = Broker::new(BrokerSettings {
        public_url: opts.public_url.clone(),
        cookie_domain: None,
        session_lifetime: 8 * 3600,
        session_refresh: opts.session_refresh,
        redirect: RedirectPolicy {
            allowed_domains: vec!["localhost".into(), "127.0.0.1".into()],
            allow_http: true,
        },
        http: opts.http.clone(),
        unscoped: opts.unscoped.clone(),
    });
    broker.set_keys(
        KeyRing::new(&[KeyRing::generate_secret()]).expect("a generated key is long enough"),
    );
    let check_opts = CheckOptions {
        paths: opts.paths.clone(),
        live: true,
        namespace: opts.namespace.clone(),
        public_url: opts.public_url.clone(),
        http: opts.http.clone(),
        domains: Some(opts.domains.clone()),
    };
    let app = broker
        .router()
        .merge(metrics::router(broker.metrics.clone()));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!(
        "sso-operator dev: broker on {} — open {}/ in a browser",
        opts.listen,
        opts.public_url.as_str().trim_end_matches('/')
    );

    // Ctrl-C or SIGTERM ends the run with exit 0, as for every subcommand.
    let mut shutdown = std::pin::pin!(crate::cli::runtime::shutdown_signal());
    let mut last_fingerprint = None;
    let mut last_config: Option<BrokerConfig> = None;
    let mut since_check = Duration::ZERO;
    let tick = Duration::from_secs(1);
    loop {
        let fp = files_fingerprint(&opts.paths);
        if last_fingerprint != Some(fp) || since_check >= opts.revalidate {
            last_fingerprint = Some(fp);
            since_check = Duration::ZERO;
            match check::run(&check_opts).await {
                Ok(report) => {
                    let config = config_from_report(&report);
                    if last_config.as_ref() != Some(&config) {
                        print!("{}", report.render());
                        let applied = broker.apply_config(&config);
                        info!(?applied, "providers updated");
                        let base = opts.public_url.as_str().trim_end_matches('/');
                        for key in config.providers.keys() {
                            println!(
                                "  ready: {key} — log in at {base}/oauth/start?provider={key}"
                            );
                        }
                        for key in config.policies.keys() {
                            println!(
                                "  in force: AccessPolicy {key} — forward-auth at {base}/oauth/auth/{key}"
                            );
                        }
                        last_config = Some(config);
                    }
                }
                Err(e) => {
                    error!(error = %e, "cannot read the manifests; keeping the previous providers")
                }
            }
        }
        if server.is_finished() {
            return match server.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Error::Io(e)),
                Err(e) => Err(Error::Startup(format!("broker task failed: {e}"))),
            };
        }
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = &mut shutdown => {
                println!("sso-operator dev: stopped");
                return Ok(());
            }
        }
        since_check += tick;
    }
}
