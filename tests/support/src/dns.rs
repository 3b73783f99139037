//! A real DNS server for the domain verification tests: dnsmasq on
//! 127.0.0.1, restarted on the same port with new records as a test goes.
//! dnsmasq because Debian ships it as a single binary that serves TXT
//! records, NXDOMAIN for names under a local zone, and logs every query it
//! receives (which the 1,000-domain test counts), from options alone: no
//! zone files, no control channel.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::free_port;

/// A `txt-record` line: `value` at `name`.
pub fn txt(name: &str, value: &str) -> String {
    format!("txt-record={name},\"{value}\"")
}

pub struct Dnsmasq {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Dnsmasq {
    pub fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("sso-dns-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            port: free_port(),
            dir,
            child: None,
        }
    }

    /// (Re)starts the server with `lines` as its configuration (after the
    /// common part: loopback only, no upstream, `.test` answered locally).
    pub fn serve(&mut self, lines: &[String]) {
        self.stop();
        let conf = self.dir.join("dnsmasq.conf");
        let mut text = format!(
            "port={}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\nlocal=/test/\nlog-queries\nlog-facility={}\nuser=root\n",
            self.port,
            self.log().display()
        );
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        std::fs::write(&conf, text).unwrap();
        // Debian puts it in /usr/sbin, not on every user's PATH.
        let bin = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("dnsmasq");
        let child = Command::new(bin)
            .arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", conf.display()))
            .arg("--pid-file")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dnsmasq (scripts/test.sh installs dnsmasq-base)");
        self.child = Some(child);
        // Up once it accepts TCP (it listens on UDP and TCP together).
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "dnsmasq did not start; its log: {:?}",
            std::fs::read_to_string(self.log())
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("queries.log")
    }

    /// TXT queries the server has received so far.
    pub fn txt_queries(&self) -> usize {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("query[TXT]"))
            .count()
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Default for Dnsmasq {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
