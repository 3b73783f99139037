use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use kube::CustomResourceExt;
use sso_operator::{
    api::IdentityProvider,
    broker::{Broker, BrokerSettings, redirect::RedirectPolicy, source},
    check::{self, CheckOptions},
    controller::{
        self, Context, Settings,
        leader::{self, LeaseConfig},
        program::ProgramSet,
        validate::Env,
    },
    dev::{self, DevOptions},
    metrics::{self, Metrics},
    oidc::discovery::{CacheTtl, DiscoveryCache, HttpSettings},
    telemetry,
};

#[derive(Parser)]
#[command(
    name = "sso-operator",
    version,
    about = "Single sign-on identity providers as Kubernetes resources"
)]
struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true, env = "SSO_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the IdentityProvider controller against the current cluster.
    Controller {
        /// The broker's public base URL (redirect URIs are computed from it).
        #[arg(long, env = "SSO_PUBLIC_URL")]
        public_url: url::Url,
        /// Namespace of the broker config Secret (the operator's namespace).
        #[arg(long, env = "POD_NAMESPACE", default_value = "sso-operator")]
        namespace: String,
        /// Name of the broker config Secret the controller writes.
        #[arg(long, default_value = "sso-operator-broker-config")]
        broker_config_secret: String,
        /// Watch IdentityProviders in this namespace only (default: all).
        #[arg(long)]
        watch_namespace: Option<String>,
        /// Only watch Secrets matching this label selector.
        #[arg(long)]
        secret_label_selector: Option<String>,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_addr: SocketAddr,
        /// Timeout of each request to an identity provider, in seconds.
        #[arg(long, default_value_t = 10)]
        provider_timeout: u64,
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
    },
    /// Run the login broker (login page, callback, sessions, forward-auth).
    Broker {
        /// Address the broker listens on.
        #[arg(long, env = "SSO_BROKER_LISTEN", default_value = "0.0.0.0:4180")]
        listen: SocketAddr,
        /// The broker's public base URL (https in production).
        #[arg(long, env = "SSO_PUBLIC_URL")]
        public_url: url::Url,
        /// Namespace of the config and session-keys Secrets.
        #[arg(long, env = "POD_NAMESPACE", default_value = "sso-operator")]
        namespace: String,
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
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_addr: SocketAddr,
        /// Timeout of each request to an identity provider, in seconds.
        #[arg(long, default_value_t = 10)]
        provider_timeout: u64,
    },
    /// The controller's validation and the broker on this machine, from
    /// manifest files instead of a cluster (local development).
    Dev {
        /// Files or folders with IdentityProvider and Secret manifests.
        #[arg(short = 'f', long = "filename", default_value = "examples/local")]
        paths: Vec<PathBuf>,
        /// Address the broker listens on.
        #[arg(long, default_value = "127.0.0.1:4180")]
        listen: SocketAddr,
        /// Public base URL (default: http://<listen>).
        #[arg(long)]
        public_url: Option<url::Url>,
        /// Namespace for manifests that do not set one.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Re-validate against the live providers this often, in seconds.
        #[arg(long, default_value_t = 30)]
        revalidate: u64,
        /// Refresh sessions with their refresh token after this many
        /// seconds (0 = off).
        #[arg(long, default_value_t = 0)]
        session_refresh: i64,
    },
    /// Print the IdentityProvider CustomResourceDefinition as YAML.
    Crd,
    /// Print the public JWK set of a `private_key_jwt` client key (PEM), to
    /// register the client at the identity provider. Its `kid` is the one
    /// the broker's client assertions carry.
    PublicJwk {
        /// The PEM private key file (PKCS#8 RSA or EC P-256, or PKCS#1 RSA).
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Validate IdentityProvider manifests from files, as the controller would.
    Check {
        /// Files or folders (every .yaml, .yml and .json below a folder).
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
        /// Also fetch discovery and the JWKS from the live issuers.
        #[arg(long)]
        live: bool,
        /// Namespace for manifests that do not set one.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The broker's public base URL, for the redirect URI shown.
        #[arg(long, env = "SSO_PUBLIC_URL", default_value = "http://127.0.0.1:4180")]
        public_url: url::Url,
        /// Timeout of each request to an identity provider, in seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// With --live: also write the broker configuration the controller
        /// would program (JSON, client secrets included) to this file, for
        /// `sso-operator broker --config-file` without a cluster.
        #[arg(long, requires = "live")]
        broker_config: Option<PathBuf>,
    },
}

/// Writes a file only its owner can read (it holds client secrets).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

fn http_settings(timeout: u64) -> HttpSettings {
    HttpSettings {
        timeout: Duration::from_secs(timeout),
        ..HttpSettings::default()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!(
                "{}",
                serde_yaml::to_string(&IdentityProvider::crd()).expect("CRD serializes")
            );
            ExitCode::SUCCESS
        }
        Command::PublicJwk { key_file } => {
            let key = std::fs::read_to_string(&key_file)
                .map_err(|e| e.to_string())
                .and_then(|pem| sso_operator::oidc::assertion::ClientKey::from_pem(&pem));
            match key {
                Ok(key) => {
                    let set = serde_json::json!({"keys": [key.public_jwk()]});
                    println!("{}", serde_json::to_string_pretty(&set).expect("JSON"));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", key_file.display());
                    ExitCode::from(2)
                }
            }
        }
        Command::Check {
            paths,
            live,
            namespace,
            public_url,
            timeout,
            broker_config,
        } => {
            let opts = CheckOptions {
                paths,
                live,
                namespace,
                public_url,
                http: http_settings(timeout),
            };
            match check::run(&opts).await {
                Ok(report) => {
                    print!("{}", report.render());
                    if let Some(path) = broker_config {
                        let config = dev::config_from_report(&report);
                        let json =
                            serde_json::to_vec_pretty(&config).expect("broker config serializes");
                        if let Err(e) = write_private(&path, &json) {
                            eprintln!("error: writing {}: {e}", path.display());
                            return ExitCode::from(2);
                        }
                    }
                    if report.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Broker {
            listen,
            public_url,
            namespace,
            config_secret,
            config_file,
            session_keys_secret,
            session_keys_file,
            allowed_redirect_domains,
            cookie_domain,
            session_lifetime,
            session_refresh,
            metrics_addr,
            provider_timeout,
        } => {
            telemetry::init(cli.log_json);
            let broker = Broker::new(BrokerSettings {
                public_url,
                cookie_domain,
                session_lifetime,
                session_refresh,
                redirect: RedirectPolicy {
                    allowed_domains: allowed_redirect_domains,
                    allow_http: false,
                },
                http: http_settings(provider_timeout),
            });
            let needs_cluster = config_file.is_none() || session_keys_file.is_none();
            let client = if needs_cluster {
                match kube::Client::try_default().await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::error!(error = %e, "no Kubernetes configuration (in-cluster or kubeconfig); use --config-file and --session-keys-file to run without a cluster");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                None
            };
            let poll = Duration::from_secs(2);
            match (config_file, &client) {
                (Some(path), _) => {
                    tokio::spawn(source::watch_config_file(broker.clone(), path, poll));
                }
                (None, Some(c)) => {
                    tokio::spawn(source::watch_config_secret(
                        broker.clone(),
                        c.clone(),
                        namespace.clone(),
                        config_secret,
                    ));
                }
                (None, None) => unreachable!("a client exists when no file is given"),
            }
            match (session_keys_file, &client) {
                (Some(path), _) => {
                    tokio::spawn(source::watch_keys_file(broker.clone(), path, poll));
                }
                (None, Some(c)) => {
                    tokio::spawn(source::watch_keys_secret(
                        broker.clone(),
                        c.clone(),
                        namespace,
                        session_keys_secret,
                    ));
                }
                (None, None) => unreachable!("a client exists when no file is given"),
            }
            tokio::spawn({
                let metrics = broker.metrics.clone();
                async move {
                    if let Err(e) = metrics::serve(metrics_addr, metrics).await {
                        tracing::error!(error = %e, %metrics_addr, "metrics server failed");
                    }
                }
            });
            let listener = match tokio::net::TcpListener::bind(listen).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, %listen, "cannot listen");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(%listen, "broker listening");
            match axum::serve(listener, broker.router())
                .with_graceful_shutdown(shutdown_signal())
                .await
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "broker stopped");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dev {
            paths,
            listen,
            public_url,
            namespace,
            revalidate,
            session_refresh,
        } => {
            telemetry::init(cli.log_json);
            let public_url = public_url.unwrap_or_else(|| {
                url::Url::parse(&format!("http://{listen}")).expect("a socket address makes a URL")
            });
            let opts = DevOptions {
                paths,
                listen,
                public_url,
                namespace,
                revalidate: Duration::from_secs(revalidate.max(5)),
                http: http_settings(10),
                session_refresh,
            };
            match dev::run(opts).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Controller {
            public_url,
            namespace,
            broker_config_secret,
            watch_namespace,
            secret_label_selector,
            metrics_addr,
            provider_timeout,
            leader_election,
            lease_name,
            identity,
        } => {
            telemetry::init(cli.log_json);
            let discovery = Arc::new(DiscoveryCache::new(
                http_settings(provider_timeout),
                CacheTtl::default(),
            ));
            let metrics = Arc::new(Metrics::new(
                discovery.fetches.clone(),
                discovery.hits.clone(),
            ));
            let client = match kube::Client::try_default().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "no Kubernetes configuration (in-cluster or kubeconfig)");
                    return ExitCode::FAILURE;
                }
            };
            tokio::spawn({
                let metrics = metrics.clone();
                async move {
                    if let Err(e) = metrics::serve(metrics_addr, metrics).await {
                        tracing::error!(error = %e, %metrics_addr, "metrics server failed");
                    }
                }
            });
            let programs = Arc::new(ProgramSet::default());
            let ctx = Arc::new(Context::new(
                client.clone(),
                metrics,
                discovery,
                programs,
                Env { public_url },
            ));
            let lease = leader_election.then(|| {
                let identity = identity
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .unwrap_or_else(|| format!("sso-operator-{}", std::process::id()));
                LeaseConfig::new(&namespace, &lease_name, &identity)
            });
            let settings = Settings {
                namespace: namespace.clone(),
                broker_config_secret,
                watch_namespace,
                secret_label_selector,
            };
            let work = controller::run(client.clone(), ctx, settings);
            let outcome = match lease {
                Some(cfg) => {
                    let api = kube::Api::namespaced(client, &namespace);
                    let (leading, _) = tokio::sync::watch::channel(false);
                    tokio::select! {
                        r = leader::run(api, cfg, leading, work) => match r {
                            Ok(r) => r,
                            Err(e) => Err(sso_operator::Error::Startup(e.to_string())),
                        },
                        () = shutdown_signal() => Ok(()),
                    }
                }
                None => work.await,
            };
            match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "controller stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C: the server stops accepting and finishes
/// the requests in flight.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
