//! The benchmark's browserless login driver (used by `bench/bench.py`).
//!
//! Walks a relying party's login through the real OP's login and consent
//! forms, like a browser with a fresh cookie jar, for either side of the
//! comparison (the broker, or Apache with mod_auth_openidc):
//!
//! - `login`: one login; prints the `Cookie` header value a browser would
//!   then send to the relying party (the session).
//! - `logins`: full login round trips in a loop for a fixed time with N
//!   workers; prints JSON: logins/s, latency percentiles, and the time
//!   split into the relying party's start, the OP's pages, and the relying
//!   party's callback (which includes its own token and userinfo calls).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::{Args, Parser, Subcommand};
use reqwest::header::{ACCEPT, COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;
use url::Url;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// The login both commands perform.
#[derive(Args)]
struct Target {
    /// Where the login starts (the broker's /oauth/start?..., or the
    /// protected URL at Apache).
    #[arg(long)]
    start: String,
    /// URL prefix of the relying party's callback.
    #[arg(long)]
    callback: String,
    #[arg(long, default_value = "alice")]
    user: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// One login; prints the Cookie header for the relying party.
    Login(Target),
    /// Login round trips for `--seconds` with `--concurrency` workers.
    Logins {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
}

/// Cookies per `host:port`, path and expiry ignored (enough for two hosts
/// on loopback).
#[derive(Default)]
struct Jar(HashMap<String, Vec<(String, String)>>);

fn origin(u: &Url) -> String {
    format!(
        "{}:{}",
        u.host_str().unwrap_or(""),
        u.port_or_known_default().unwrap_or(0)
    )
}

impl Jar {
    fn header(&self, u: &Url) -> Option<String> {
        let c = self.0.get(&origin(u))?;
        if c.is_empty() {
            return None;
        }
        Some(
            c.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    fn store(&mut self, u: &Url, resp: &reqwest::Response) {
        let host = self.0.entry(origin(u)).or_default();
        for v in resp.headers().get_all(SET_COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            let mut parts = v.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.trim().split_once('=')) else {
                continue;
            };
            let gone = value.is_empty()
                || parts.any(|a| {
                    let a = a.trim().to_ascii_lowercase();
                    a == "max-age=0" || a.starts_with("expires=thu, 01 jan 1970")
                });
            host.retain(|(k, _)| k != name);
            if !gone {
                host.push((name.to_string(), value.to_string()));
            }
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Timing {
    rp_start: Duration,
    op: Duration,
    rp_callback: Duration,
}

fn form_action(html: &str) -> Option<String> {
    let rest = &html[html.find("<form")?..];
    let a = rest.find("action=\"")? + 8;
    let end = rest[a..].find('"')?;
    Some(rest[a..a + end].replace("&amp;", "&"))
}

/// One login from `start` until the callback under `callback` answered a
/// redirect (the relying party set its session). Returns the timing and
/// the jar.
async fn login(
    client: &reqwest::Client,
    start: &str,
    callback: &str,
    user: &str,
) -> Result<(Timing, Jar), String> {
    let mut jar = Jar::default();
    let mut t = Timing::default();
    let mut url = Url::parse(start).map_err(|e| e.to_string())?;
    let mut form: Option<Vec<(String, String)>> = None;
    for step in 0..20 {
        let mut req = match form.take() {
            Some(fields) => client.post(url.clone()).form(&fields),
            None => client.get(url.clone()),
        };
        req = req.header(ACCEPT, "text/html");
        if let Some(c) = jar.header(&url) {
            req = req.header(COOKIE, c);
        }
        let began = Instant::now();
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status().as_u16();
        jar.store(&url, &resp);
        let next = resp
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| url.join(l).ok());
        let body = if next.is_none() {
            resp.text().await.unwrap_or_default()
        } else {
            // Drain so the connection goes back to the pool.
            let _ = resp.bytes().await;
            String::new()
        };
        let spent = began.elapsed();
        let at_callback = url.as_str().starts_with(callback);
        if step == 0 {
            t.rp_start += spent;
        } else if at_callback {
            t.rp_callback += spent;
        } else {
            t.op += spent;
        }
        if at_callback {
            return if (300..400).contains(&status) {
                Ok((t, jar))
            } else {
                Err(format!("the callback answered {status}: {}", clip(&body)))
            };
        }
        if let Some(next) = next {
            url = next;
            continue;
        }
        if status == 200 && body.contains("name=\"login\"") {
            url = url
                .join(&form_action(&body).ok_or("login form without action")?)
                .map_err(|e| e.to_string())?;
            form = Some(vec![
                ("prompt".into(), "login".into()),
                ("login".into(), user.into()),
                ("password".into(), "any".into()),
            ]);
            continue;
        }
        if status == 200 && body.contains("name=\"prompt\" value=\"consent\"") {
            url = url
                .join(&form_action(&body).ok_or("consent form without action")?)
                .map_err(|e| e.to_string())?;
            form = Some(vec![("prompt".into(), "consent".into())]);
            continue;
        }
        return Err(format!("stuck at {url} ({status}): {}", clip(&body)));
    }
    Err("more than 20 steps".into())
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(mut v: Vec<f64>) -> serde_json::Value {
    if v.is_empty() {
        return json!(null);
    }
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    json!({"p50": pct(0.5), "p99": pct(0.99), "mean": mean})
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Cmd::Login(t) => match login(&client(), &t.start, &t.callback, &t.user).await {
            Ok((_, jar)) => {
                let rp = Url::parse(&t.callback).expect("callback URL");
                println!("{}", jar.header(&rp).unwrap_or_default());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("login failed: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Cmd::Logins {
            target,
            concurrency,
            seconds,
        } => {
            let client = client();
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let shared = Arc::new(target);
            let began = Instant::now();
            let mut workers = Vec::new();
            for _ in 0..concurrency {
                let (client, shared) = (client.clone(), shared.clone());
                workers.push(tokio::spawn(async move {
                    let mut done = Vec::new();
                    let mut errors = Vec::new();
                    while Instant::now() < deadline {
                        let t0 = Instant::now();
                        match login(&client, &shared.start, &shared.callback, &shared.user).await {
                            Ok((t, _)) => done.push((t0.elapsed(), t)),
                            Err(e) => errors.push(e),
                        }
                    }
                    (done, errors)
                }));
            }
            let mut done = Vec::new();
            let mut errors = Vec::new();
            for w in workers {
                let (d, e) = w.await.expect("worker");
                done.extend(d);
                errors.extend(e);
            }
            let elapsed = began.elapsed().as_secs_f64();
            let out = json!({
                "logins": done.len(),
                "errors": errors.len(),
                "first_error": errors.first(),
                "seconds": elapsed,
                "rate": done.len() as f64 / elapsed,
                "concurrency": concurrency,
                "total_ms": summary(done.iter().map(|(d, _)| ms(*d)).collect()),
                "rp_start_ms": summary(done.iter().map(|(_, t)| ms(t.rp_start)).collect()),
                "op_ms": summary(done.iter().map(|(_, t)| ms(t.op)).collect()),
                "rp_callback_ms": summary(done.iter().map(|(_, t)| ms(t.rp_callback)).collect()),
            });
            println!("{out}");
            if errors.is_empty() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
