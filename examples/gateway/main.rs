//! A resilient LLM gateway built from llm-tower's public crates: axum in front, one
//! `Retry → Breaker → RateLimit → Provider` stack per provider, fallback chains across them.
//!
//! ```text
//! cargo run --release --example gateway                          # demo: embedded mock providers
//! cargo run --release --example gateway -- --config gateway.toml # your providers
//! ```
//!
//! Without `--config` (or `GATEWAY_CONFIG`) it uses the providers whose API keys are set
//! (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `GEMINI_API_KEY`, `OPENROUTER_API_KEY`); with none
//! set, or with `--mock`, it starts four mock providers with a fault plan that shows retries,
//! fallbacks and a breaker trip in the log. `RUST_LOG=debug` shows more.

mod app;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use app::Gateway;
use app::config::GatewayConfig;
use app::demo::DemoProviders;
use tokio::net::TcpListener;

// NOTE: HTTP and JSON allocate on every request; jemalloc serves that faster than glibc's
// malloc under load (BENCHMARKS.md, "The gateway under load").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const USAGE: &str = "usage: gateway [--config FILE] [--listen ADDR] [--mock]

  --config FILE   TOML configuration (also GATEWAY_CONFIG)
  --listen ADDR   address to listen on (default 127.0.0.1:3000; also GATEWAY_LISTEN)
  --mock          use the embedded mock providers even if API keys are set";

struct Args {
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    mock: bool,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args {
            config: None,
            listen: None,
            mock: false,
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--config" => {
                    let path = args.next().ok_or("--config needs a file")?;
                    parsed.config = Some(PathBuf::from(path));
                }
                "--listen" => {
                    let addr = args.next().ok_or("--listen needs an address")?;
                    parsed.listen =
                        Some(addr.parse().map_err(|e| format!("--listen {addr}: {e}"))?);
                }
                "--mock" => parsed.mock = true,
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(parsed)
    }
}

/// The gateway narrates what the layers do through their hooks (retries, fallbacks, breaker
/// changes); the layers' own events join in at `RUST_LOG=debug`. `RUST_LOG` takes a level or
/// `tracing` targets (`info,llm_fallback_layer=debug`).
fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| {
            Targets::new()
                .with_default(LevelFilter::INFO)
                .with_targets([
                    ("llm_retry_layer", LevelFilter::ERROR),
                    ("llm_breaker_layer", LevelFilter::ERROR),
                    ("llm_fallback_layer", LevelFilter::ERROR),
                    ("llm_ratelimit_layer", LevelFilter::ERROR),
                    ("llm_providers", LevelFilter::ERROR),
                ])
        });
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_target(false))
        .with(filter)
        .init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("gateway: {message}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if message.is_empty() { 0 } else { 2 });
        }
    };
    let vars = |name: &str| std::env::var(name).ok();
    let config_path = args
        .config
        .clone()
        .or_else(|| vars("GATEWAY_CONFIG").map(PathBuf::from));

    // The mocks live as long as the gateway serves.
    let mut demo = None;
    let loaded = match config_path {
        Some(path) => {
            GatewayConfig::from_file(&path, &vars).map(|c| (c, path.display().to_string()))
        }
        None => match (args.mock, GatewayConfig::from_env_keys(&vars)) {
            (false, Ok(Some(config))) => Ok((config, "API keys in the environment".to_owned())),
            (false, Err(err)) => Err(err),
            _ => match DemoProviders::start().await {
                Ok(mocks) => {
                    let config = mocks
                        .config()
                        .map(|c| (c, "embedded mock providers".to_owned()));
                    demo = Some(mocks);
                    config
                }
                Err(err) => {
                    eprintln!("gateway: cannot start the mock providers: {err}");
                    return ExitCode::FAILURE;
                }
            },
        },
    };
    let (mut config, source) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("gateway: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let gateway = match Gateway::from_config(&config, &source, &vars) {
        Ok(gateway) => gateway,
        Err(err) => {
            eprintln!("gateway: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("gateway: cannot listen on {}: {err}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map_or(config.listen, |a| a);
    tracing::info!(
        "llm-tower gateway on http://{addr} — providers: {} ({source})",
        gateway.provider_names().join(", ")
    );
    if let Some(demo) = &demo {
        for (name, mock) in &demo.mocks {
            tracing::info!("mock {name} at {}", mock.base_url());
        }
        println!(
            "\nTry:\n  curl -s localhost:{port}/api/chat -H 'content-type: application/json' -d '{{\"message\":\"Hello\"}}'\n  curl -s localhost:{port}/health\n  curl -s localhost:{port}/metrics\n",
            port = addr.port()
        );
    }
    match gateway.serve(listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gateway: server error: {err}");
            ExitCode::FAILURE
        }
    }
}
