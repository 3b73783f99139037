//! Load, faults and soak: the broker under concurrent logins and
//! forward-auth while one provider's IdP goes down, hangs, answers
//! garbage and rotates its keys, and while the configuration is hot
//! reloaded over and over. The healthy providers must not lose a single
//! request.
//!
//! `faults_on_one_idp_leave_the_others_untouched` runs with the test suite
//! (about half a minute); `scripts/faults.sh` runs it alone in release
//! mode. `soak` is ignored by default: `scripts/soak.sh` runs it for ten
//! minutes against the release binary and checks RSS and open files.

use sso_test_support as common;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    KillOnDrop,
    badop::BadOp,
    broker::{Landing, TestBroker, broker_from_files, browser, config, login_at, provider},
    faultproxy::{FaultProxy, Mode},
    free_port,
};
use sso_operator::config::{BrokerConfig, ProgrammedProvider};

const PATHS: [&str; 5] = ["/authorize", "/token", "/userinfo", "/jwks", "/end_session"];

/// Outcomes of one kind of request.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Failures by reason (or HTTP status).
    reasons: Mutex<BTreeMap<String, u64>>,
    slowest_ms: AtomicU64,
}

impl Tally {
    fn record(&self, started: Instant, result: Result<(), String>) {
        let ms = started.elapsed().as_millis() as u64;
        self.slowest_ms.fetch_max(ms, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                *self.reasons.lock().unwrap().entry(why).or_default() += 1;
            }
        }
    }

    fn reasons(&self) -> BTreeMap<String, u64> {
        self.reasons.lock().unwrap().clone()
    }

    fn take_reasons(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.reasons.lock().unwrap())
    }

    /// Fails the test if any request of this kind failed.
    fn assert_none_failed(&self, what: &str) {
        assert_eq!(
            self.failed.load(Ordering::Relaxed),
            0,
            "{what} failed: {}",
            self.summary()
        );
    }

    fn summary(&self) -> String {
        format!(
            "{} ok, {} failed {:?}, slowest {} ms",
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.reasons(),
            self.slowest_ms.load(Ordering::Relaxed)
        )
    }
}

fn why(landing: &Landing) -> String {
    landing
        .reason()
        .map_or_else(|| format!("HTTP {}", landing.status), str::to_string)
}

/// One full login through `key` and a forward-auth check of its session.
async fn login_once(base: &str, key: &str) -> Result<reqwest::Client, String> {
    let client = browser();
    let landing = login_at(&client, base, key, "unused", "/done").await;
    if landing.status != 302 || landing.location.as_deref() != Some(&format!("{base}/done")) {
        return Err(why(&landing));
    }
    check_session(&client, base, key).await?;
    Ok(client)
}

async fn check_session(client: &reqwest::Client, base: &str, key: &str) -> Result<(), String> {
    let r = client
        .get(format!("{base}/oauth/auth"))
        .send()
        .await
        .map_err(|e| format!("forward-auth request: {e}"))?;
    let provider = r
        .headers()
        .get("x-auth-request-provider")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if r.status() != 200 || provider.as_deref() != Some(key) {
        return Err(format!("forward-auth HTTP {} for {provider:?}", r.status()));
    }
    Ok(())
}

/// Worker loops that run until [`Workers::stop`].
#[derive(Default)]
struct Workers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    /// One worker per key, each logging in through it over and over,
    /// resting `pause` between logins.
    fn logins(&mut self, base: &str, keys: &[&'static str], tally: &Arc<Tally>, pause: Duration) {
        for &key in keys {
            let (base, tally) = (base.to_string(), tally.clone());
            self.spawn(move |stop| async move {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    tally.record(t, login_once(&base, key).await.map(drop));
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            });
        }
    }

    /// One worker per key, each with a session through it (logged in now)
    /// that it checks at forward-auth over and over.
    async fn checks(&mut self, base: &str, keys: &[&'static str], tally: &Arc<Tally>) {
        for &key in keys {
            let client = login_once(base, key).await.expect("a first login");
            let (base, tally) = (base.to_string(), tally.clone());
            self.spawn(move |stop| async move {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    tally.record(t, check_session(&client, &base, key).await);
                }
            });
        }
    }

    /// Any other loop; it gets the stop flag.
    fn spawn<F: Future<Output = ()> + Send + 'static>(
        &mut self,
        task: impl FnOnce(Arc<AtomicBool>) -> F,
    ) {
        self.tasks.push(tokio::spawn(task(self.stop.clone())));
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a load task panicked");
        }
    }
}

/// Providers `team/a`, `team/b` (healthy) and `team/victim`, whose
/// back-channel (token, JWKS, userinfo) goes through a fault proxy; the
/// browser still reaches the victim's authorization endpoint directly.
struct Fleet {
    a: BadOp,
    b: BadOp,
    victim: BadOp,
    proxy: FaultProxy,
}

impl Fleet {
    async fn start() -> Fleet {
        let a = BadOp::start().await;
        // `team/a` rotates its client secret during the run: the IdP
        // accepts both while the configs alternate.
        a.set_secrets(&["secret", "secret-2"]);
        let b = BadOp::start().await;
        let victim = BadOp::start().await;
        let proxy = FaultProxy::start(victim.addr).await;
        Fleet {
            a,
            b,
            victim,
            proxy,
        }
    }

    fn victim_provider(&self, base: &str) -> ProgrammedProvider {
        let mut p = provider(
            "team/victim",
            &self.victim.issuer,
            base,
            PATHS,
            "client",
            Some("secret"),
        );
        let e = &mut p.endpoints;
        e.token_endpoint = self.proxy.route(&e.token_endpoint);
        e.jwks_uri = self.proxy.route(&e.jwks_uri);
        e.userinfo_endpoint = e.userinfo_endpoint.as_deref().map(|u| self.proxy.route(u));
        p
    }

    /// Config A, or config B: `team/a` with its new client secret and an
    /// extra provider.
    fn config(&self, base: &str, b_variant: bool) -> BrokerConfig {
        let secret = if b_variant { "secret-2" } else { "secret" };
        let mut providers = vec![
            provider(
                "team/a",
                &self.a.issuer,
                base,
                PATHS,
                "client",
                Some(secret),
            ),
            provider(
                "team/b",
                &self.b.issuer,
                base,
                PATHS,
                "client",
                Some("secret"),
            ),
            self.victim_provider(base),
        ];
        if b_variant {
            providers.push(provider(
                "team/extra",
                &self.b.issuer,
                base,
                PATHS,
                "client",
                Some("secret"),
            ));
        }
        config(providers)
    }
}

async fn wait_for_victim_login(base: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        match login_once(base, "team/victim").await {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the victim did not recover: last {last}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_on_one_idp_leave_the_others_untouched() {
    let fleet = Arc::new(Fleet::start().await);
    let f = fleet.clone();
    let tb = Arc::new(TestBroker::start(move |base| f.config(base, false)).await);
    let base = tb.base.clone();
    let logins = Arc::new(Tally::default());
    let checks = Arc::new(Tally::default());
    let victim = Arc::new(Tally::default());
    let reloads = Arc::new(AtomicU64::new(0));
    let mut workers = Workers::default();
    let healthy = ["team/a", "team/b", "team/a", "team/b"];
    // Logins through the healthy providers, two workers each, and
    // forward-auth with sessions of them.
    workers.logins(&base, &healthy, &logins, Duration::ZERO);
    workers.checks(&base, &healthy, &checks).await;
    // Hot reloads: configs A and B alternate every 50 ms.
    {
        let (tb, fleet, reloads) = (tb.clone(), fleet.clone(), reloads.clone());
        workers.spawn(move |stop| async move {
            let mut flip = false;
            while !stop.load(Ordering::Relaxed) {
                flip = !flip;
                tb.broker.apply_config(&fleet.config(&tb.base, flip));
                reloads.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    // Logins through the victim, all along.
    workers.logins(&base, &["team/victim"], &victim, Duration::from_millis(20));

    // The victim's faults, one after another, each followed by recovery.
    wait_for_victim_login(&base).await.unwrap();
    let mut seen = Vec::new();
    for (mode, expect) in [
        (Mode::Down, "token_unreachable"),
        (Mode::Slow, "token_unreachable"),
        (Mode::Garbage, "token_invalid_response"),
    ] {
        victim.take_reasons();
        fleet.proxy.set(mode);
        let deadline = Instant::now() + Duration::from_secs(20);
        while victim.reasons().get(expect).copied().unwrap_or(0) < 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let during = victim.reasons();
        fleet.proxy.set(Mode::Pass);
        seen.push((mode, during.clone()));
        assert!(
            during.get(expect).copied().unwrap_or(0) >= 1,
            "{mode:?}: victim logins must fail as {expect}, saw {during:?}"
        );
        wait_for_victim_login(&base).await.unwrap();
    }
    // Key rotation: the next ID token names a kid the broker has not seen.
    let fetches_before = fleet.victim.recorded().jwks_fetches;
    fleet.victim.rotate_keys();
    wait_for_victim_login(&base).await.unwrap();
    assert!(
        fleet.victim.recorded().jwks_fetches > fetches_before,
        "the rotation was picked up by refetching the JWKS"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    workers.stop().await;
    eprintln!("healthy logins: {}", logins.summary());
    eprintln!("forward-auth:   {}", checks.summary());
    eprintln!("victim logins:  {}", victim.summary());
    eprintln!("victim faults:  {seen:?}");
    eprintln!("config reloads: {}", reloads.load(Ordering::Relaxed));

    logins.assert_none_failed("healthy logins");
    checks.assert_none_failed("forward-auth");
    assert!(
        logins.ok.load(Ordering::Relaxed) >= 50,
        "{}",
        logins.summary()
    );
    assert!(
        checks.ok.load(Ordering::Relaxed) >= 500,
        "{}",
        checks.summary()
    );
    assert!(reloads.load(Ordering::Relaxed) >= 100);
    // A healthy login never waited on the hung IdP (the broker's upstream
    // timeout is 3 s; a login stuck behind it would take at least that).
    assert!(
        logins.slowest_ms.load(Ordering::Relaxed) < 3000,
        "a healthy login took {} ms",
        logins.slowest_ms.load(Ordering::Relaxed)
    );
    assert!(!victim.reasons().contains_key("HTTP 500"));
    // Both client secrets of `team/a` were used.
    let auth: Vec<String> = fleet
        .a
        .recorded()
        .token_auth
        .into_iter()
        .flatten()
        .collect();
    use base64::Engine;
    let basic = |s: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("client:{s}"))
        )
    };
    assert!(auth.contains(&basic("secret")), "the old secret was used");
    assert!(auth.contains(&basic("secret-2")), "the new secret was used");
}

/// Resident memory (KiB) and open file descriptors of a process.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

/// The broker binary under sustained forward-auth and logins, its config
/// file rewritten every few seconds. Returns (seconds, RSS KiB, fds)
/// samples after asserting zero failed requests.
async fn run_soak(seconds: u64) -> Vec<(u64, u64, usize)> {
    let a = BadOp::start().await;
    let b = BadOp::start().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("providers.json.gz");
    let keys_path = dir.path().join("keys");
    let cfg = |n: u64| {
        let mut providers = vec![
            provider("team/a", &a.issuer, &base, PATHS, "client", Some("secret")),
            provider("team/b", &b.issuer, &base, PATHS, "client", Some("secret")),
        ];
        // A display name that changes with every rewrite: each one is a
        // real reload.
        providers[1].display_name = format!("Provider b, revision {n}");
        config(providers).to_gzip()
    };
    std::fs::write(&cfg_path, cfg(0)).unwrap();
    std::fs::write(&keys_path, "soak-session-key-0123456789abcdef0123\n").unwrap();
    let child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_sso-operator"))
            .args(broker_from_files(
                &format!("127.0.0.1:{port}"),
                &base,
                &cfg_path,
                &keys_path,
                &format!("127.0.0.1:{}", free_port()),
            ))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the broker did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut first = Err(String::new());
    while Instant::now() < deadline {
        first = login_once(&base, "team/a").await;
        if first.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    first.expect("the broker serves a first login");

    let logins = Arc::new(Tally::default());
    let checks = Arc::new(Tally::default());
    let mut workers = Workers::default();
    workers.logins(&base, &["team/a", "team/b"], &logins, Duration::ZERO);
    workers
        .checks(&base, &["team/a", "team/b"].repeat(4), &checks)
        .await;
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        n += 1;
        std::fs::write(&cfg_path, cfg(n)).unwrap();
        let (rss, fds) = rss_and_fds(pid);
        let t = started.elapsed().as_secs();
        samples.push((t, rss, fds));
        if n % 12 == 0 {
            eprintln!(
                "{t:>5} s  RSS {:.1} MiB  fds {fds}  logins {}  forward-auth {}",
                rss as f64 / 1024.0,
                logins.ok.load(Ordering::Relaxed),
                checks.ok.load(Ordering::Relaxed)
            );
        }
    }
    workers.stop().await;
    eprintln!("logins:       {}", logins.summary());
    eprintln!("forward-auth: {}", checks.summary());
    logins.assert_none_failed("logins");
    checks.assert_none_failed("forward-auth");
    assert!(logins.ok.load(Ordering::Relaxed) > 0 && checks.ok.load(Ordering::Relaxed) > 0);
    drop(child);
    samples
}

/// A short soak with the test suite: the harness works, nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_briefly() {
    let samples = run_soak(15).await;
    assert!(samples.len() >= 2);
    let max_fds = samples.iter().map(|s| s.2).max().unwrap();
    assert!(max_fds < 200, "the broker holds {max_fds} files");
}

/// The soak: `SSO_SOAK_SECONDS` (default 600) of load; RSS and open files
/// must stay flat after the first fifth (warm-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "ten minutes; scripts/soak.sh"]
async fn soak() {
    let seconds = std::env::var("SSO_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let samples = run_soak(seconds).await;
    let n = samples.len();
    let warm = &samples[n / 5..2 * n / 5];
    let last = &samples[4 * n / 5..];
    let mean = |s: &[(u64, u64, usize)]| s.iter().map(|x| x.1).sum::<u64>() as f64 / s.len() as f64;
    let max_fds = |s: &[(u64, u64, usize)]| s.iter().map(|x| x.2).max().unwrap();
    let (warm_rss, last_rss) = (mean(warm), mean(last));
    eprintln!(
        "RSS after warm-up {:.1} MiB, at the end {:.1} MiB ({:+.1}%); fds {} then {}",
        warm_rss / 1024.0,
        last_rss / 1024.0,
        (last_rss / warm_rss - 1.0) * 100.0,
        max_fds(warm),
        max_fds(last)
    );
    assert!(
        last_rss <= warm_rss * 1.10 + 2048.0,
        "RSS grew from {warm_rss} KiB to {last_rss} KiB"
    );
    assert!(max_fds(last) <= max_fds(warm) + 8, "file descriptors grew");
}
