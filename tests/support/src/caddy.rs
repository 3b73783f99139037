//! A real Caddy (Debian's) in front of the broker and an app, protecting
//! the app with `forward_auth` at an AccessPolicy's URL, as the README's
//! Caddy recipe does. Caddy passes the broker's answer on to the browser
//! (a redirect to the login page included) and sends `X-Forwarded-Method`
//! and `X-Forwarded-Uri`.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

pub struct Caddy {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Caddyfile: `/oauth/*` to the broker, `/app/*` behind forward_auth
/// at `auth_path`, identity headers copied to the app.
pub fn caddyfile(port: u16, broker: SocketAddr, app: SocketAddr, auth_path: &str) -> String {
    format!(
        r#"{{
	admin off
	auto_https off
}}
http://127.0.0.1:{port} {{
	handle /oauth/* {{
		reverse_proxy {broker}
	}}
	handle /app/* {{
		forward_auth {broker} {{
			uri {auth_path}
			copy_headers X-Auth-Request-User X-Auth-Request-Email X-Auth-Request-Groups X-Auth-Request-Provider
		}}
		reverse_proxy {app}
	}}
}}
"#
    )
}

impl Caddy {
    /// Starts Caddy on 127.0.0.1:`port`.
    pub fn start(port: u16, broker: SocketAddr, app: SocketAddr, auth_path: &str) -> Caddy {
        let bin = "/usr/bin/caddy";
        assert!(
            std::path::Path::new(bin).exists(),
            "Caddy is not installed: run scripts/test.sh (or scripts/browser-deps.sh) first"
        );
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("Caddyfile");
        std::fs::write(&conf, caddyfile(port, broker, app, auth_path)).unwrap();
        let child = Command::new(bin)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&conf)
            // Caddy keeps state under $HOME/.local/share/caddy and
            // $XDG_CONFIG_HOME: a directory of its own.
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start caddy");
        let caddy = Caddy {
            child,
            port,
            _dir: dir,
        };
        let mut caddy = caddy;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return caddy;
            }
            if let Ok(Some(status)) = caddy.child.try_wait() {
                panic!(
                    "caddy exited ({status}) before listening on port {port}; its error is above"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("caddy did not start on port {port}");
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
