use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use kube::CustomResourceExt;
use sso_operator::{
    api::IdentityProvider,
    check::{self, CheckOptions},
    controller::{self, Context, Settings, program::ProgramSet, validate::Env},
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
    },
    /// Print the IdentityProvider CustomResourceDefinition as YAML.
    Crd,
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
    },
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
        Command::Check {
            paths,
            live,
            namespace,
            public_url,
            timeout,
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
        Command::Controller {
            public_url,
            namespace,
            broker_config_secret,
            watch_namespace,
            secret_label_selector,
            metrics_addr,
            provider_timeout,
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
            let settings = Settings {
                namespace,
                broker_config_secret,
                watch_namespace,
                secret_label_selector,
            };
            match controller::run(client, ctx, settings).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "controller stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
