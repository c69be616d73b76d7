//! The `llm-gateway` binary as a user starts it, for the tests that drive it: a spawned
//! process on a configuration file and an ephemeral port (read from its JSON log), its log
//! collected, killed when dropped.

// NOTE: each test crate uses part of this module.
#![allow(dead_code)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running gateway process and what it logged.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
    pub(crate) dir: TempDir,
}

/// A directory removed when dropped.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("llm-gateway-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn command(config: &std::path::Path, listen: &str, envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_llm-gateway"));
    command
        .args([
            "--config",
            config.to_str().unwrap(),
            "--listen",
            listen,
            "--log-format",
            "json",
        ])
        .env_remove("RUST_LOG")
        .env_remove("GATEWAY_API_KEYS")
        .env_remove("GATEWAY_LISTEN")
        .env_remove("GATEWAY_CONFIG")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// The message of a JSON log line.
pub(crate) fn message(line: &str) -> String {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v["fields"]["message"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Running {
    /// Starts the binary on `config` (TOML) with `envs`, and waits until it listens.
    pub(crate) async fn start(config: &str, envs: &[(&str, &str)]) -> Running {
        let dir = TempDir::new();
        let path = dir.0.join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = command(&path, "127.0.0.1:0", envs).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let base = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.lock().unwrap().push(line.clone());
                let message = message(&line);
                if let Some(rest) = message.strip_prefix("llm-gateway on ") {
                    return rest.split_whitespace().next().unwrap().to_owned();
                }
            }
            let mut stderr = String::new();
            use tokio::io::AsyncReadExt;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .await
                .unwrap();
            panic!("the gateway exited before listening: {stderr}");
        })
        .await
        .expect("the gateway listens within 20 s");
        let collected = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                collected.lock().unwrap().push(line);
            }
        });
        Running {
            child,
            base,
            log,
            dir,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends `signal` (`TERM`, `HUP`) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Two mock providers taking `key`: one answering every call with an overload (Anthropic's
/// 529), one answering.
pub(crate) async fn overloaded_and_up(
    key: &str,
) -> (
    llm_testkit::server::MockProvider,
    llm_testkit::server::MockProvider,
) {
    use llm_testkit::server::{Fault, MockProvider, Rule};
    let down = MockProvider::builder()
        .api_key(key)
        .rule(Rule::any().fault(Fault::Overloaded))
        .start()
        .await
        .unwrap();
    let up = MockProvider::builder().api_key(key).start().await.unwrap();
    (down, up)
}
