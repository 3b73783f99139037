//! A real nginx in front of the broker and an app, the way users protect
//! apps: `/oauth/` proxied to the broker, `/app/` behind `auth_request` to
//! the broker's `/oauth/auth`, the identity headers passed to the app, 401
//! sent to the login page. Plus the app: an upstream that echoes the
//! request headers it received as JSON.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    /// SIGTERM first: the master stops its workers (a SIGKILL to the master
    /// alone leaves them running), then SIGKILL if it lingers.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..60 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> String {
    for candidate in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    panic!("nginx is not installed: run scripts/test.sh (or scripts/browser-deps.sh) first");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Nginx {
    /// Starts nginx on `port` (on 127.0.0.1) in front of `broker` and `app`,
    /// asking the broker's `/oauth/auth` (any provider's session).
    pub fn start(port: u16, broker: SocketAddr, app: SocketAddr) -> Nginx {
        Self::start_for(port, broker, app, "/oauth/auth")
    }

    /// The same, asking the broker at `auth_path` (an AccessPolicy's
    /// `/oauth/auth/<namespace>/<name>`).
    pub fn start_for(port: u16, broker: SocketAddr, app: SocketAddr, auth_path: &str) -> Nginx {
        Self::start_apps(port, broker, app, &[("/app/", auth_path)])
    }

    /// Several apps under one nginx: each `(prefix, auth_path)` a location
    /// of the app server behind `auth_request` at its own broker URL, with
    /// its own login redirect. The first asks through `location =
    /// /oauth/auth` (as a single-app nginx does), the others through
    /// internal locations.
    pub fn start_apps(
        port: u16,
        broker: SocketAddr,
        app: SocketAddr,
        apps: &[(&str, &str)],
    ) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let user = if is_root() { "user root root;" } else { "" };
        let mut locations = String::new();
        for (i, (prefix, auth_path)) in apps.iter().enumerate() {
            // At a policy's URL, the login offers that policy's providers.
            let login = match auth_path.strip_prefix("/oauth/auth/") {
                Some(policy) => format!("/oauth/start?policy={policy}&rd="),
                None => "/oauth/login?rd=".to_string(),
            };
            let (auth_location, internal) = if i == 0 {
                ("/oauth/auth".to_string(), "")
            } else {
                (format!("/_sso_auth_{i}"), "internal;")
            };
            locations.push_str(&format!(
                r#"
    # The forward-auth subrequest.
    location = {auth_location} {{
      {internal}
      proxy_pass http://broker{auth_path};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      # Set here, so a client's own values never reach the broker.
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Uri $request_uri;
      proxy_set_header X-Forwarded-Method "";
      proxy_set_header X-Original-URL "";
    }}
    # The protected app.
    location {prefix} {{
      auth_request {auth_location};
      # A refreshed session comes back on the forward-auth answer.
      auth_request_set $sso_session $upstream_http_set_cookie;
      add_header Set-Cookie $sso_session;
      auth_request_set $sso_user $upstream_http_x_auth_request_user;
      auth_request_set $sso_email $upstream_http_x_auth_request_email;
      auth_request_set $sso_groups $upstream_http_x_auth_request_groups;
      auth_request_set $sso_provider $upstream_http_x_auth_request_provider;
      proxy_set_header X-Auth-Request-User $sso_user;
      proxy_set_header X-Auth-Request-Email $sso_email;
      proxy_set_header X-Auth-Request-Groups $sso_groups;
      proxy_set_header X-Auth-Request-Provider $sso_provider;
      error_page 401 = @login_{i};
      proxy_pass http://app;
    }}
    location @login_{i} {{
      return 302 {login}$request_uri;
    }}
"#
            ));
        }
        let conf = format!(
            r#"{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream broker {{ server {broker}; keepalive 16; }}
  upstream app {{ server {app}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    # The broker's own routes: login page, start, callback, logout.
    location /oauth/ {{
      proxy_pass http://broker;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
    }}
    # The broker's home page: who is signed in, sign-out buttons.
    location = / {{
      proxy_pass http://broker;
      proxy_set_header Host $http_host;
    }}
{locations}
  }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(binary())
            .args(["-p", &d, "-c"])
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx { child, port, dir };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return nginx;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default();
        panic!("nginx did not start on port {port}; error log:\n{log}");
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// The app behind nginx: answers every request with the path and headers
/// it received, as JSON.
pub async fn echo_upstream() -> SocketAddr {
    use axum::{Json, Router, http::HeaderMap, http::Uri};
    async fn echo(uri: Uri, headers: HeaderMap) -> Json<serde_json::Value> {
        let headers: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
                )
            })
            .collect();
        Json(serde_json::json!({"path": uri.path(), "headers": headers}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, Router::new().fallback(echo))
            .await
            .unwrap();
    });
    addr
}
