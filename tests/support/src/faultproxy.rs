//! A TCP proxy in front of an IdP that can make it go down, hang, or
//! answer garbage, on command. Every mode change drops the connections in
//! flight, so pooled keep-alive connections see the new mode at once.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::broadcast,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward to the IdP.
    Pass,
    /// Accept and close at once: the IdP is down.
    Down,
    /// Accept and never answer: the IdP hangs beyond every timeout.
    Slow,
    /// Answer every request with a truncated JSON body.
    Garbage,
}

#[derive(Clone)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    kill: broadcast::Sender<()>,
}

impl FaultProxy {
    pub async fn start(backend: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let (kill, _) = broadcast::channel(4);
        let proxy = FaultProxy { addr, mode, kill };
        let p = proxy.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let mode = *p.mode.lock().unwrap();
                let kill = p.kill.subscribe();
                tokio::spawn(serve(sock, backend, mode, kill));
            }
        });
        proxy
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
        let _ = self.kill.send(());
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn route(&self, url: &str) -> String {
        let mut u = url::Url::parse(url).unwrap();
        u.set_port(Some(self.addr.port())).unwrap();
        u.to_string()
    }
}

async fn serve(
    mut sock: TcpStream,
    backend: SocketAddr,
    mode: Mode,
    mut kill: broadcast::Receiver<()>,
) {
    match mode {
        Mode::Down => drop(sock),
        Mode::Slow => {
            let _ = tokio::time::timeout(Duration::from_secs(120), kill.recv()).await;
        }
        Mode::Garbage => {
            let mut buf = [0u8; 8192];
            let _ = sock.read(&mut buf).await;
            let body = "{\"keys\": [{\"kty\"";
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
        Mode::Pass => {
            let Ok(mut up) = TcpStream::connect(backend).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut sock, &mut up) => {}
                _ = kill.recv() => {}
            }
        }
    }
}
