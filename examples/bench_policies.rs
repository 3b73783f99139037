//! Forward-auth at an AccessPolicy's URL as the number of policies grows:
//! the broker binary (release) serving one policy over one provider, and
//! 1,000 policies over 100 providers, measured side by side with wrk in
//! alternating rounds; and the broker's memory with 10,000 policies.
//! Writes `bench/results/policies.md`. Run through `bench/policies.sh`.
//!
//! Usage: `bench_policies [--duration SECS] [--rounds N] [--connections N]`

use std::{
    io::Write as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sso_operator::{
    broker::{seal::KeyRing, session},
    config::{BrokerConfig, ProgrammedPolicy},
};
use sso_test_support::{
    broker::{OP_PATHS, provider},
    rss_kib,
};

const KEY: &[u8] = b"bench-policies-key-0123456789abcdef";

struct Args {
    duration: u64,
    rounds: usize,
    connections: usize,
}

fn args() -> Args {
    let mut a = Args {
        duration: 10,
        rounds: 3,
        connections: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().and_then(|v| v.parse().ok());
        match (flag.as_str(), value) {
            ("--duration", Some(v)) => a.duration = v,
            ("--rounds", Some(v)) => a.rounds = v as usize,
            ("--connections", Some(v)) => a.connections = v as usize,
            _ => panic!("usage: bench_policies [--duration SECS] [--rounds N] [--connections N]"),
        }
    }
    a
}

/// `providers` providers `ns-<i>/idp`, and `policies` policies
/// `ns-<i % providers>/app-<i>` on host `app-<i>.example.com`, each
/// accepting its namespace's provider, with a few rules.
fn config(providers: usize, policies: usize) -> BrokerConfig {
    let mut c = BrokerConfig::default();
    for i in 0..providers {
        let key = format!("ns-{i}/idp");
        let p = provider(
            &key,
            "https://idp.example.com",
            "https://sso.example.com",
            OP_PATHS,
            "client",
            Some("secret"),
        );
        c.providers.insert(key, p);
    }
    for i in 0..policies {
        let ns = format!("ns-{}", i % providers);
        let p: ProgrammedPolicy = serde_json::from_value(serde_json::json!({
            "namespace": ns, "name": format!("app-{i}"), "generation": 1,
            "hosts": [format!("app-{i}.example.com")],
            "providers": [format!("{ns}/idp")],
            "rules": {
                "allow": [{"groups": ["g-1", "g-2", "users"]}, {"emailDomains": ["example.com"]}],
                "deny": [{"users": ["mallory"]}],
            },
        }))
        .expect("a valid policy");
        c.policies.insert(p.key(), p);
    }
    c
}

/// A session for `provider`, sealed with the bench key.
fn cookie(provider: &str) -> String {
    let now = jiff::Timestamp::now().as_second();
    let s = session::Session {
        provider: provider.into(),
        sub: "1".into(),
        user: "alice".into(),
        email: Some("alice@example.com".into()),
        groups: vec!["users".into(), "g-9".into()],
        groups_truncated: false,
        issued_at: now,
        expires_at: now + 3600,
        validated_at: now,
        refresh_token: None,
        claims: Default::default(),
        claims_looked_for: Vec::new(),
        issuer: String::new(),
        client_id: String::new(),
    };
    let sealed = session::seal(&KeyRing::new(&[KEY]).unwrap(), s, &[]).unwrap();
    format!("{}={sealed}", session::cookie_name(provider))
}

struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(config: &BrokerConfig) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, config.to_json()).unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, [KEY, b"\n"].concat()).unwrap();
    let (port, metrics) = (free_port(), free_port());
    // SSO_BIN: another build to compare (an older commit's binary).
    let bin = std::env::var("SSO_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/sso-operator").to_string()
    });
    let child = Command::new(bin)
        .args(["broker", "--public-url", "https://sso.example.com"])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{metrics}"))
        .arg("--config-file")
        .arg(&cfg)
        .arg("--session-keys-file")
        .arg(&keys)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("target/release/sso-operator (bench/policies.sh builds it)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let ready = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{metrics}/readyz"))
            .output()
            .map(|o| o.stdout == b"200")
            .unwrap_or(false);
        if ready {
            return Broker {
                child,
                port,
                _dir: dir,
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the broker did not become ready");
}

/// Requests per second from wrk, after checking one request answers 200.
fn wrk(b: &Broker, policy: &str, host: &str, cookie: &str, a: &Args) -> f64 {
    let url = format!("http://127.0.0.1:{}/oauth/auth/{policy}", b.port);
    // The same request for the check and for wrk.
    let headers = [
        "-H".to_string(),
        format!("Cookie: {cookie}"),
        "-H".to_string(),
        format!("X-Forwarded-Host: {host}"),
    ];
    let status = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(&headers)
        .arg(&url)
        .output()
        .expect("curl");
    assert_eq!(status.stdout, b"200", "{url} must admit the bench session");
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{}", a.connections),
            &format!("-d{}s", a.duration),
        ])
        .args(&headers)
        .arg(&url)
        .output()
        .expect("wrk (bench/policies.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "wrk saw refusals:\n{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let a = args();
    let one = config(1, 1);
    let many = config(100, 1000);
    let (small, big) = (start(&one), start(&many));
    // The policy asked in the big table is in the middle of it.
    let small_cookie = cookie("ns-0/idp");
    let big_cookie = cookie("ns-57/idp");
    let (mut r1, mut r1000) = (Vec::new(), Vec::new());
    for round in 0..a.rounds {
        // Alternate which goes first: the machine's noise falls on both.
        let first_small = round % 2 == 0;
        for small_now in [first_small, !first_small] {
            if small_now {
                r1.push(wrk(
                    &small,
                    "ns-0/app-0",
                    "app-0.example.com",
                    &small_cookie,
                    &a,
                ));
            } else {
                r1000.push(wrk(
                    &big,
                    "ns-57/app-557",
                    "app-557.example.com",
                    &big_cookie,
                    &a,
                ));
            }
        }
    }
    let (m1, m1000) = (median(r1.clone()), median(r1000.clone()));
    let (rss_small, rss_big) = (rss_kib(small.child.id()), rss_kib(big.child.id()));
    drop((small, big));

    // Memory with 10,000 policies over 100 providers, after serving.
    let huge = config(100, 10_000);
    let json_bytes = huge.to_json().len();
    let gzip_bytes = huge.to_gzip().len();
    let h = start(&huge);
    let _ = wrk(
        &h,
        "ns-57/app-9957",
        "app-9957.example.com",
        &big_cookie,
        &Args { duration: 2, ..a },
    );
    let rss_huge = rss_kib(h.child.id());
    drop(h);

    // Memory with 10,000 providers (one team each, none with its own CA)
    // and a policy for each, after serving.
    let teams = config(10_000, 10_000);
    let teams_gzip = teams.to_gzip().len();
    let t = start(&teams);
    let _ = wrk(
        &t,
        "ns-5757/app-5757",
        "app-5757.example.com",
        &cookie("ns-5757/idp"),
        &Args { duration: 2, ..a },
    );
    let rss_teams = rss_kib(t.child.id());
    drop(t);

    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default()
    );
    let date = jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string();
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let report = format!(
        "# Forward-auth at a policy's URL: one policy vs 1,000\n\n\
Machine: {machine}. Date: {date}. `bench/policies.sh` (wrk -t1 -c{c} -d{d}s, {n} rounds, alternating; medians).\n\n\
| broker config | requests/s (median) | rounds | RSS after the runs |\n|---|---|---|---|\n\
| 1 provider, 1 policy | {m1:.0} | {r1} | {rs} MiB |\n\
| 100 providers, 1,000 policies | {m1000:.0} | {r1000} | {rb} MiB |\n\n\
1,000 policies serve at **{ratio:.0}%** of the one-policy rate (target ≥ 90%).\n\n\
10,000 policies over 100 providers: config {json} KiB as JSON, {gz} KiB gzip-compressed in the broker config Secret (limit 1,024 KiB); broker RSS {rh} MiB after serving.\n\n\
10,000 providers with a policy each: {tgz} KiB gzip-compressed; broker RSS {rt} MiB after serving (target ≤ 64 MiB).\n",
        c = a.connections,
        d = a.duration,
        n = a.rounds,
        r1 = fmt(&r1),
        r1000 = fmt(&r1000),
        rs = rss_small / 1024,
        rb = rss_big / 1024,
        ratio = 100.0 * m1000 / m1,
        json = json_bytes / 1024,
        gz = gzip_bytes / 1024,
        rh = rss_huge / 1024,
        tgz = teams_gzip / 1024,
        rt = rss_teams / 1024,
    );
    print!("{report}");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/results/policies.md");
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(report.as_bytes()))
        .expect("write bench/results/policies.md");
    eprintln!("wrote {path}");
}
