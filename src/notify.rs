//! systemd's notify protocol (sd_notify), without libsystemd: `READY=1` once the pipeline runs, `WATCHDOG=1`
//! while it keeps turning (the unit's `WatchdogSec=` restarts a hung mien), `STOPPING=1` on the way out.
//! A datagram to `$NOTIFY_SOCKET`; does nothing when that is unset (not started by systemd).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct Notifier {
    target: Option<Target>,
    /// Ping at least this often (half of WatchdogSec); None: no watchdog.
    every: Option<Duration>,
    last: Option<Instant>,
}

enum Target {
    Path(PathBuf),
    /// Linux abstract socket (`@name` in NOTIFY_SOCKET).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `NOTIFY_SOCKET` and `WATCHDOG_USEC` (and `WATCHDOG_PID`, which must be ours when set).
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok().filter(|s| !s.is_empty());
        let pid_ok = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()).is_none_or(|p| p == std::process::id());
        let usec = std::env::var("WATCHDOG_USEC").ok().and_then(|u| u.parse::<u64>().ok()).filter(|_| pid_ok);
        Notifier::new(socket.as_deref(), usec.map(Duration::from_micros))
    }

    pub fn new(socket: Option<&str>, watchdog: Option<Duration>) -> Notifier {
        let target = socket.map(|s| match s.strip_prefix('@') {
            Some(name) => Target::Abstract(name.as_bytes().to_vec()),
            None => Target::Path(PathBuf::from(s)),
        });
        Notifier { every: watchdog.filter(|_| target.is_some()).map(|w| w / 2), target, last: None }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    fn send(&self, msg: &str) {
        let Some(t) = &self.target else { return };
        let r = UnixDatagram::unbound().and_then(|s| match t {
            Target::Path(p) => s.send_to(msg.as_bytes(), p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                s.send_to_addr(msg.as_bytes(), &addr)
            }
        });
        if let Err(e) = r {
            log::warn!("sd_notify {msg:?}: {e}");
        }
    }

    pub fn ready(&mut self) {
        self.send("READY=1");
        self.last = Some(Instant::now());
    }

    /// Call once per loop turn; sends `WATCHDOG=1` when half the watchdog interval has passed.
    pub fn alive(&mut self) {
        if let Some(every) = self.every {
            if self.last.is_none_or(|t| t.elapsed() >= every) {
                self.send("WATCHDOG=1");
                self.last = Some(Instant::now());
            }
        }
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_ready_then_rate_limited_watchdog() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut n = Notifier::new(Some(path.to_str().unwrap()), Some(Duration::from_millis(200)));
        let mut buf = [0u8; 64];
        n.ready();
        let k = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1");
        // Within half the interval: nothing; after it: one ping.
        n.alive();
        sock.set_nonblocking(true).unwrap();
        assert!(sock.recv(&mut buf).is_err(), "pinged too early");
        std::thread::sleep(Duration::from_millis(110));
        n.alive();
        n.alive();
        sock.set_nonblocking(false).unwrap();
        let k = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"WATCHDOG=1");
        sock.set_nonblocking(true).unwrap();
        assert!(sock.recv(&mut buf).is_err(), "two pings in one interval");
        n.stopping();
        sock.set_nonblocking(false).unwrap();
        let k = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"STOPPING=1");
    }

    #[test]
    fn without_a_socket_nothing_happens() {
        let mut n = Notifier::new(None, Some(Duration::from_millis(1)));
        assert!(!n.enabled());
        n.ready();
        n.alive();
        n.stopping();
    }
}
