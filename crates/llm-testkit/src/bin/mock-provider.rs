//! `mock-provider`: the test kit's fault-injecting provider server as a process.
//!
//! ```text
//! cargo run -p llm-testkit --bin mock-provider -- --port 8089 --plan plan.toml
//! ```
//!
//! Prints `mock-provider listening on http://127.0.0.1:PORT` once it accepts connections
//! (with `--port 0` the port is chosen by the system), serves until SIGTERM or Ctrl-C, then
//! closes every connection and exits with status 0. An invalid plan stops it with a message
//! naming the file and field, and status 2.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use llm_testkit::server::{MockProvider, Plan};

const USAGE: &str =
    "usage: mock-provider [--host ADDR] [--port N] [--plan plan.toml] [--api-key KEY]";

struct Args {
    host: IpAddr,
    port: u16,
    plan: Option<String>,
    api_key: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        plan: None,
        api_key: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--host" => {
                let v = value()?;
                args.host = v
                    .parse()
                    .map_err(|_| format!("--host: not an IP address: {v:?}"))?;
            }
            "--port" => {
                let v = value()?;
                args.port = v
                    .parse()
                    .map_err(|_| format!("--port: not a port number: {v:?}"))?;
            }
            "--plan" => args.plan = Some(value()?),
            "--api-key" => args.api_key = Some(value()?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let plan = match args.plan.as_deref().map(Plan::from_file).transpose() {
        Ok(plan) => plan.unwrap_or_default(),
        Err(err) => {
            eprintln!("mock-provider: {err}");
            return ExitCode::from(2);
        }
    };
    let mut builder = MockProvider::builder()
        .plan(plan)
        .bind(SocketAddr::new(args.host, args.port));
    if let Some(key) = args.api_key {
        builder = builder.api_key(key);
    }
    let mock = match builder.start().await {
        Ok(mock) => mock,
        Err(err) => {
            eprintln!("mock-provider: cannot start: {err}");
            return ExitCode::from(1);
        }
    };
    println!("mock-provider listening on {}", mock.base_url());
    wait_for_signal().await;
    mock.shutdown().await;
    eprintln!("mock-provider: stopped");
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
