//! Starts the real OpenID provider (npm `oidc-provider`, tests/op/server.mjs)
//! on a free loopback port for one test, and stops it when dropped.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

pub struct Op {
    child: Child,
    pub issuer: String,
    pub port: u16,
}

use crate::free_port;

impl Op {
    /// Starts the provider with extra environment (e.g. `OP_ISSUER_PATH`).
    pub fn start(env: &[(&str, &str)]) -> Op {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../op");
        assert!(
            std::path::Path::new(dir)
                .join("node_modules/oidc-provider")
                .exists(),
            "the test OpenID provider is not installed: run scripts/test.sh (or scripts/op-deps.sh) first"
        );
        // A port from free_port() can be taken by someone else before node
        // binds it (ten tests start providers at once); try another then.
        // A node process that printed nothing for a minute is tried again
        // too: once in CI (2 cores, eleven providers starting together) one
        // hung after its first line while the ten others started.
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            match Self::spawn(dir, port, env) {
                Ok((child, issuer)) => {
                    return Op {
                        child,
                        issuer,
                        port,
                    };
                }
                Err(e) if e.contains("EADDRINUSE") || e.contains(NO_READY) => {
                    eprintln!("{e}\n(starting another)");
                    last = e
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last}")
    }

    fn spawn(dir: &str, port: u16, env: &[(&str, &str)]) -> Result<(Child, String), String> {
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(dir)
            .env("OP_PORT", port.to_string())
            .stdin(Stdio::null())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node must be installed (scripts/test.sh installs it)");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("OP READY ") {
                    let _ = tx.send(Ok(issuer.to_string()));
                }
            }
            let _ = tx.send(Err(()));
        });
        // The provider's stderr goes to the test's output; the first lines
        // are kept for the failure message if it does not start.
        let stderr = child.stderr.take().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let keep = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[op :{port}] {line}");
                let mut kept = keep.lock().unwrap();
                if kept.len() < 40 {
                    kept.push(line);
                }
            }
        });
        // Generous: tests/broker.rs starts ten of these at once on two cores.
        let outcome = rx.recv_timeout(Duration::from_secs(60));
        if let Ok(Ok(issuer)) = outcome {
            return Ok((child, issuer));
        }
        let waited = match outcome {
            Err(_) => NO_READY,
            _ => "closed its output before OP READY",
        };
        let _ = child.kill();
        let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
        // Let the stderr reader finish the last lines.
        std::thread::sleep(Duration::from_millis(100));
        Err(format!(
            "oidc-provider on port {port} {waited} ({status}); its stderr:\n{}",
            seen.lock().unwrap().join("\n")
        ))
    }
}

const NO_READY: &str = "did not print OP READY within 60 s";

impl Drop for Op {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
