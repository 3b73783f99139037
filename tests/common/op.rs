//! Starts the real OpenID provider (npm `oidc-provider`, tests/op/server.mjs)
//! on a free loopback port for one test, and stops it when dropped.
#![allow(dead_code)]

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

use super::free_port;

impl Op {
    /// Starts the provider with extra environment (e.g. `OP_ISSUER_PATH`).
    pub fn start(env: &[(&str, &str)]) -> Op {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/op");
        assert!(
            std::path::Path::new(dir)
                .join("node_modules/oidc-provider")
                .exists(),
            "the test OpenID provider is not installed: run scripts/test.sh (or scripts/op-deps.sh) first"
        );
        let port = free_port();
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(dir)
            .env("OP_PORT", port.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed (scripts/test.sh installs it)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("OP READY ") {
                    let _ = tx.send(issuer.to_string());
                }
            }
        });
        let issuer = rx
            // Generous: tests/broker.rs starts ten of these at once on two cores.
            .recv_timeout(Duration::from_secs(90))
            .expect("oidc-provider did not start within 90s");
        Op {
            child,
            issuer,
            port,
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
