//! The gateway binary (the example, as `cargo test` builds it) under a file-descriptor limit of
//! 64, flooded with 100 half-open connections: they take every descriptor it has, the header
//! timeout closes them, and it serves again by itself. Linux only (`prlimit`); elsewhere the
//! test says so and passes.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use llm_testkit::server::MockProvider;
use tokio::io::AsyncWriteExt;

/// Kills the child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_past_the_descriptor_limit_do_not_stop_the_gateway() {
    let examples = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("gateway"))
        .unwrap();
    let prlimit = Command::new("prlimit").arg("--version").output();
    if !examples.exists() || prlimit.is_err() {
        eprintln!("skipped: needs the gateway example binary and prlimit (Linux)");
        return;
    }
    let mock = MockProvider::builder().api_key("k").start().await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("llm-tower-fd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.toml");
    let mut file = std::fs::File::create(&config).unwrap();
    write!(
        file,
        r#"
listen = "127.0.0.1:{port}"

[server]
header_timeout = "500ms"

[[providers]]
name = "llm"
kind = "openai_compatible"
base_url = "{}/v1"
model = "m"
api_key = "k"
"#,
        mock.base_url()
    )
    .unwrap();
    let child = Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg(&examples)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _running = Running(child);
    let base = format!("http://127.0.0.1:{port}");
    // A new connection for every check: a pooled one would not show whether the gateway
    // can accept.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let healthy = || async {
        client
            .get(format!("{base}/v1/models"))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    };
    let started = Instant::now();
    while !healthy().await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 100 half-open connections: each sends part of a request head, then nothing.
    let mut held = Vec::new();
    for _ in 0..100 {
        if let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let _ = tcp.write_all(b"POST /api/chat HTTP/1.1\r\nHost:").await;
            held.push(tcp);
        }
    }
    // The header timeout closes what the gateway accepted; it accepts the rest as
    // descriptors free, and serves a normal request again within a few seconds.
    let flooded = Instant::now();
    while !healthy().await {
        assert!(
            flooded.elapsed() < Duration::from_secs(10),
            "the gateway still does not serve {:?} after the flood",
            flooded.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "served again {:?} after 100 half-open connections (descriptor limit 64)",
        flooded.elapsed()
    );
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
}
