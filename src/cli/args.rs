//! Argument groups shared by several subcommands (`#[command(flatten)]`).

use std::{net::SocketAddr, time::Duration};

use clap::Args;
use url::Url;

use ipnet::IpNet;

use crate::oidc::{discovery::HttpSettings, egress::Egress};

/// Where the operator runs: the broker's public URL and the operator's
/// namespace (`controller`, `broker`).
#[derive(Args, Clone, Debug)]
pub struct Operator {
    /// The broker's public base URL (https in production); redirect URIs
    /// are computed from it.
    #[arg(long, env = "SSO_PUBLIC_URL")]
    pub public_url: Url,
    /// The operator's namespace: where the broker config, session keys and
    /// leader Lease live.
    #[arg(long, env = "POD_NAMESPACE", default_value = "sso-operator")]
    pub namespace: String,
}

/// Manifest files and the namespace of those that set none (`check`, `dev`).
#[derive(Args, Clone, Debug)]
pub struct Manifests {
    /// Namespace for manifests that do not set one.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

/// The DNS server domains are verified through.
#[derive(Args, Clone, Debug)]
pub struct Dns {
    /// The DNS server domains are verified through (`ip:port`). Default:
    /// the system's (/etc/resolv.conf: the cluster DNS in a pod).
    #[arg(long)]
    pub dns_server: Option<std::net::SocketAddr>,
    /// Seconds one DNS query may take before a domain check fails with
    /// LookupTimeout.
    #[arg(long, default_value_t = 5)]
    pub dns_timeout_secs: u64,
}

impl Dns {
    pub fn verifier(&self) -> crate::controller::domains::Verifier {
        crate::controller::domains::Verifier::new(crate::domains::dns::Settings {
            server: self.dns_server,
            timeout: Duration::from_secs(self.dns_timeout_secs.max(1)),
        })
    }
}

/// `check` and `dev`: verifying domains from manifests.
#[derive(Args, Clone, Debug)]
pub struct DomainChecks {
    #[command(flatten)]
    pub dns: Dns,
    /// The domain verification key (a file holding it, as in the
    /// controller's Secret <release>-domain-key, key `domain-key`): with
    /// it, --live computes each domain's record and looks it up.
    #[arg(long)]
    pub domain_key_file: Option<std::path::PathBuf>,
}

impl DomainChecks {
    /// The verifier, keyed from --domain-key-file when given; `hint` says
    /// where a key would come from when it is not.
    pub fn verifier(
        &self,
        hint: &'static str,
    ) -> Result<crate::controller::domains::Verifier, String> {
        let mut v = self.dns.verifier();
        v.key_hint = hint;
        if let Some(path) = &self.domain_key_file {
            let key = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("{} holds no key", path.display()));
            }
            let _ = v.key.set(key.as_bytes().to_vec());
        }
        Ok(v)
    }
}

/// How the operator talks to identity providers.
#[derive(Args, Clone, Debug)]
pub struct ProviderHttp {
    /// Timeout of each request to an identity provider, in seconds.
    #[arg(long, alias = "timeout", default_value_t = 10)]
    pub provider_timeout: u64,
    /// Non-public address ranges provider URLs may reach (comma-separated
    /// CIDRs, e.g. an in-cluster IdP's Service range). Without them,
    /// discovery, JWKS, token and userinfo requests go only to public
    /// addresses, judged after DNS resolution.
    #[arg(long, value_delimiter = ',')]
    pub allow_provider_cidrs: Vec<IpNet>,
}

impl ProviderHttp {
    pub fn settings(&self) -> HttpSettings {
        HttpSettings {
            timeout: Duration::from_secs(self.provider_timeout),
            egress: Egress::allowing(self.allow_provider_cidrs.clone()),
            ..HttpSettings::default()
        }
    }

    /// [`Self::settings`] with loopback allowed too (`dev`: the IdP runs
    /// on this machine).
    pub fn settings_with_loopback(&self) -> HttpSettings {
        let mut allowed = self.allow_provider_cidrs.clone();
        allowed.extend(Egress::with_loopback().allowed().iter().copied());
        HttpSettings {
            egress: Egress::allowing(allowed),
            ..self.settings()
        }
    }
}

/// The address of `/metrics`, `/healthz` and `/readyz` (`controller`,
/// `broker`).
#[derive(Args, Clone, Debug)]
pub struct Serve {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
}

/// What `/oauth/auth` answers when no AccessPolicy is named in the path
/// (`broker`, `dev`).
#[derive(Args, Clone, Debug)]
pub struct ForwardAuth {
    /// Answer `/oauth/auth` as the AccessPolicy `<namespace>/<name>` would.
    /// Without this (or --any-provider-auth) `/oauth/auth` admits nobody:
    /// apps ask their policy's URL, `/oauth/auth/<namespace>/<name>`.
    #[arg(long, env = "SSO_DEFAULT_POLICY", value_parser = policy_key)]
    pub default_policy: Option<String>,
    /// Let `/oauth/auth` admit any programmed provider's session (the
    /// behaviour before AccessPolicies). Unsafe with providers you do not
    /// trust for every app: any of them can sign anyone in.
    #[arg(long, env = "SSO_ANY_PROVIDER_AUTH", conflicts_with = "default_policy")]
    pub any_provider_auth: bool,
}

impl ForwardAuth {
    pub fn unscoped(&self) -> crate::broker::Unscoped {
        use crate::broker::Unscoped;
        match (&self.default_policy, self.any_provider_auth) {
            (Some(key), _) => Unscoped::Policy(key.clone()),
            (None, true) => Unscoped::AnyProvider,
            (None, false) => Unscoped::Deny,
        }
    }
}

fn policy_key(s: &str) -> Result<String, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(s.to_string())
        }
        _ => Err(format!("{s:?} is not <namespace>/<name>")),
    }
}
