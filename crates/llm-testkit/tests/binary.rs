//! The `mock-provider` binary: starts on a free port with a plan file, serves, stops cleanly
//! on SIGTERM and frees its port; an invalid plan stops it with the file and field named.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mock-provider"))
}

fn temp_plan(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn starts_serves_and_stops_on_sigterm_leaving_no_port() {
    let plan = temp_plan(
        "mock-plan",
        "[[rule]]\nmodel = \"down\"\nfault = { fault = \"status\", status = 503 }\n",
    );
    let mut child = binary()
        .args(["--port", "0", "--plan"])
        .arg(&plan)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("mock-provider listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let addr: std::net::SocketAddr = url.strip_prefix("http://").unwrap().parse().unwrap();

    let client = reqwest::Client::new();
    let send = |model: &str| {
        client
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth("sk-test")
            .body(format!(
                r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#
            ))
            .send()
    };
    assert_eq!(send("down").await.unwrap().status(), 503);
    assert_eq!(send("up").await.unwrap().status(), 200);
    let log: serde_json::Value = client
        .get(format!("{url}/__mock/attempts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log.as_array().unwrap().len(), 2);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exit = None;
    for _ in 0..500 {
        if let Some(status) = child.try_wait().unwrap() {
            exit = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exit = exit.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("mock-provider did not stop within 5 s of SIGTERM")
    });
    assert!(exit.success(), "{exit:?}");
    // The port is free again: nothing is left listening.
    std::net::TcpListener::bind(addr).unwrap();
    let _ = std::fs::remove_file(plan);
}

#[test]
fn an_invalid_plan_stops_start_up_naming_file_and_field() {
    let plan = temp_plan(
        "bad-plan",
        "[[rule]]\nfrom = \"10s\"\nuntil = \"1s\"\nfault = { fault = \"ok\" }\n",
    );
    let out = binary().arg("--plan").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&*plan.to_string_lossy()), "{stderr}");
    assert!(stderr.contains("rule[0].until"), "{stderr}");
    let _ = std::fs::remove_file(plan);
    let out = binary().args(["--port", "many"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port"));
}
