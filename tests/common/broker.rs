//! A real mosquitto on a loopback port (apt's mosquitto, installed by scripts/setup.sh; its packaged service is
//! not used), for the tests of the MQTT uplink and of the metrics that report it, and for examples/outage.rs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::net::TcpListener;
use std::time::{Duration, Instant};

pub struct Broker {
    child: Child,
    pub port: u16,
    conf: PathBuf,
}

impl Broker {
    /// Anonymous broker with persistence (queued messages for offline sessions survive a restart).
    pub fn start(dir: &Path, port: u16) -> Broker {
        let body = format!("allow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\n", dir.display());
        Self::start_with(dir, port, &body)
    }
    pub fn start_with(dir: &Path, port: u16, body: &str) -> Broker {
        let conf = dir.join("mosquitto.conf");
        // Run as root, mosquitto would switch to user `mosquitto`, who cannot read the test's private dir.
        let user = if unsafe { libc::geteuid() } == 0 { "user root\n" } else { "" };
        std::fs::write(&conf, format!("{user}listener {port} 127.0.0.1\n{body}")).unwrap();
        let mut b = Broker { child: Self::spawn(&conf), port, conf };
        b.wait_up();
        b
    }
    fn spawn(conf: &Path) -> Child {
        Command::new("mosquitto").arg("-c").arg(conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("mosquitto (apt install mosquitto)")
    }
    fn wait_up(&mut self) {
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    pub fn stop(&mut self) {
        // SIGTERM: mosquitto saves its persistence database (queued messages for offline sessions).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.conf);
        self.wait_up();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on (now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The default profile with the uplink on, pointed at 127.0.0.1:`port` without TLS, spooling under `dir`.
pub fn uplink_profile(dir: &Path, port: u16) -> PathBuf {
    let p = dir.join("mqtt.toml");
    let spool = format!("spool_dir = \"{}/spool\"", dir.display());
    let mut text = mien::config::DEFAULT_PROFILE.to_string();
    for (from, to) in [
        ("enabled = false\nhost", "enabled = true\nhost".to_string()),
        ("port = 8883", format!("port = {port}")),
        ("tls = true", "tls = false".into()),
        ("device = \"\"", "device = \"cam1\"".into()),
        ("spool_dir = \"/var/lib/mien/spool\"", spool.clone()),
        ("drain_s = 5", "drain_s = 20".into()),
        ("host = \"localhost\"", "host = \"127.0.0.1\"".into()),
    ] {
        assert!(text.contains(from), "{from:?} not in the default profile");
        text = text.replace(from, &to);
    }
    std::fs::write(&p, &text).unwrap();
    p
}
