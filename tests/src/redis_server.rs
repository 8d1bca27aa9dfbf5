//! A real `redis-server` (Debian's, installed by `scripts/setup.sh`) on a free loopback port,
//! without persistence, for tests that compare Strata's replies with Redis's.

use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::raw::{RawConnection, Reply};

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process, killed when dropped (also when a test fails).
pub struct RedisServer {
    child: Child,
    pub port: u16,
    _directory: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one and waits until it answers PING.
    ///
    /// # Panics
    /// When `redis-server` cannot run or does not answer within 10 s.
    #[must_use]
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// [`start`](Self::start) with more `redis-server` options (`["--databases", "1"]`).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    #[must_use]
    pub fn start_with(options: &[&str]) -> RedisServer {
        let directory = tempfile::tempdir().expect("temporary directory");
        let port = crate::free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .args(options)
            .arg("--dir")
            .arg(directory.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("redis-server cannot run ({error}); scripts/setup.sh installs it")
            });
        let server = RedisServer { child, port, _directory: directory };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let answered = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && RawConnection::connect(port).command_words(&["PING"])
                    == Reply::Simple("PONG".into());
            if answered {
                return server;
            }
            assert!(Instant::now() < deadline, "redis-server on {port} did not answer PING");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
