//! A real Kubernetes control plane for the cluster tier: etcd and
//! kube-apiserver (RBAC on) built from their Go modules by
//! `scripts/controlplane.sh` into `.tools/bin/controlplane`, started on
//! 127.0.0.1 with ports the kernel picks and a fresh data directory.
//!
//! One control plane serves all tests of a test binary ([`shared`]); each
//! test works in namespaces of its own ([`ControlPlane::namespace`]). It
//! stops when the test binary exits: its stdin is a pipe from this process,
//! and the control plane shuts down when that pipe closes. [`ControlPlane`]
//! values made with [`ControlPlane::start`] are stopped by PID when dropped.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Mutex, OnceLock, mpsc},
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, CustomResourceExt as _,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use sso_operator::api::{IdentityProvider, policy::AccessPolicy};

/// The binary `scripts/controlplane.sh` builds.
pub fn binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/controlplane")
}

/// A running etcd + kube-apiserver.
pub struct ControlPlane {
    /// The admin kubeconfig (user `admin`, group `system:masters`).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    pub dir: tempfile::TempDir,
    child: Mutex<Child>,
    /// Kept open: the control plane stops when it closes.
    _stdin: ChildStdin,
}

impl ControlPlane {
    /// Starts a control plane and waits until its API server is ready.
    pub fn start() -> ControlPlane {
        let bin = binary();
        assert!(
            bin.exists(),
            "{} is missing: run scripts/controlplane.sh (scripts/test.sh does) to build the control plane",
            bin.display()
        );
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix("sso-controlplane-")
            .tempdir()
            .unwrap();
        let mut child = Command::new(&bin)
            .arg("--stop-on-stdin-eof")
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("controlplane.log")).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let server = loop {
            match rx.recv_timeout(Duration::from_secs(240)) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("ready ") {
                        break url.to_string();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(dir.path().join("controlplane.log"))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    panic!(
                        "the control plane did not become ready ({:?}); its log ends:\n{}",
                        child.try_wait(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        };
        ControlPlane {
            kubeconfig: dir.path().join("kubeconfig"),
            server,
            dir,
            child: Mutex::new(child),
            _stdin: stdin,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// A client with the admin kubeconfig.
    pub async fn client(&self) -> Client {
        self.client_with(&self.kubeconfig).await
    }

    /// A client from `kubeconfig`.
    pub async fn client_with(&self, kubeconfig: &Path) -> Client {
        let kc = Kubeconfig::read_from(kubeconfig).unwrap();
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    }

    /// A kubeconfig that impersonates `user` in `groups` (the admin may),
    /// for running a process with exactly that identity's permissions.
    pub fn kubeconfig_as(&self, name: &str, user: &str, groups: &[&str]) -> PathBuf {
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let mut kc: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let auth = &mut kc["users"][0]["user"];
        auth["as"] = user.into();
        auth["as-groups"] = groups.iter().map(|g| serde_json::json!(g)).collect();
        let path = self.dir.path().join(format!("kubeconfig-{name}"));
        std::fs::write(&path, serde_yaml::to_string(&kc).unwrap()).unwrap();
        path
    }

    /// The kubeconfig of a ServiceAccount, by impersonation.
    pub fn kubeconfig_for_service_account(&self, ns: &str, name: &str) -> PathBuf {
        let user = format!("system:serviceaccount:{ns}:{name}");
        let ns_group = format!("system:serviceaccounts:{ns}");
        self.kubeconfig_as(
            &format!("sa-{ns}-{name}"),
            &user,
            &["system:serviceaccounts", &ns_group, "system:authenticated"],
        )
    }

    /// A fresh namespace `<prefix>-<n>`.
    pub async fn namespace(&self, prefix: &str) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let nss: Api<Namespace> = Api::all(self.client().await);
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
        name
    }

    /// Stops it by PID (SIGTERM, then SIGKILL after 30 s) and waits.
    pub fn stop(&self) {
        crate::terminate(&mut self.child.lock().unwrap(), Duration::from_secs(30));
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes the data directories of control planes no longer running. A
/// shared control plane outlives the statics that would remove its
/// directory, so each start cleans up after earlier runs (the last run's
/// logs stay until the next one).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("sso-controlplane-"));
        let pid = std::fs::read_to_string(path.join("controlplane.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["pid"].as_u64());
        let running = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        let age = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        // A directory without a pid may belong to one still starting.
        if is_ours && !running && (pid.is_some() || age > Duration::from_secs(600)) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The control plane of this test binary, started on first use.
pub fn shared() -> &'static ControlPlane {
    static CP: OnceLock<ControlPlane> = OnceLock::new();
    CP.get_or_init(ControlPlane::start)
}

/// Applies the operator's CRDs (IdentityProvider, AccessPolicy) as
/// generated and waits until the server has established them; the first.
/// Panics with the server's words if it refuses one.
pub async fn install_crds(client: &Client) -> CustomResourceDefinition {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut first = None;
    for crd in [IdentityProvider::crd(), AccessPolicy::crd()] {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply("sso-operator-tests").force(),
            &Patch::Apply(crd),
        )
        .await
        .unwrap_or_else(|e| panic!("the real API server refuses the generated CRD {name}: {e}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let established = loop {
            let crd = crds.get(&name).await.unwrap();
            let ok = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if ok {
                break crd;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "CRD {name} not Established within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        first.get_or_insert(established);
    }
    first.unwrap()
}
