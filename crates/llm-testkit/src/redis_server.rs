//! [`RedisServer`]: a real `redis-server` for tests, on a free loopback port, stopped with
//! the value — no fixed port, no leftover process.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set this variable (CI does) to make a missing `redis-server` a failure instead of a skip.
pub const REQUIRE_REDIS: &str = "LLM_TOWER_REQUIRE_REDIS";

/// A `redis-server` process for one test (no persistence, loopback only).
///
/// ```no_run
/// use llm_testkit::RedisServer;
///
/// // `None` (with a message) where redis-server is not installed, unless CI requires it.
/// let Some(mut server) = RedisServer::start() else { return };
/// let url = server.url();
/// server.stop(); // Redis down…
/// server.restart().unwrap(); // …and back on the same port.
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts one on a free port. Without the binary: `None` and a "SKIPPED" line, or a
    /// panic when [`REQUIRE_REDIS`] is set.
    pub fn start() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let mut server = RedisServer { child: None, port };
        match server.restart() {
            Ok(()) => Some(server),
            Err(err) if std::env::var_os(REQUIRE_REDIS).is_some() => {
                panic!("redis-server is required ({REQUIRE_REDIS} is set): {err}")
            }
            Err(err) => {
                eprintln!(
                    "SKIPPED: redis-server could not be started ({err}); install it to run the Redis tests"
                );
                None
            }
        }
    }

    /// Starts it (again) on its port, returning once it accepts connections.
    pub fn restart(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(std::io::Error::other(
                    "redis-server did not start within 10 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills it (Redis becomes unreachable); [`restart`](Self::restart) brings it back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
