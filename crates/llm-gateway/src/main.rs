//! `llm-gateway`: the gateway's command line.
//!
//! ```text
//! cargo run --release -p llm-gateway                          # demo: embedded mock providers
//! cargo run --release -p llm-gateway -- --config gateway.toml # your providers
//! ```
//!
//! Without `--config` (or `GATEWAY_CONFIG`) it uses the providers whose API keys are set
//! (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `GEMINI_API_KEY`, `OPENROUTER_API_KEY`); with none
//! set, or with `--mock`, it starts four mock providers with a fault plan that shows retries,
//! fallbacks and a breaker trip in the log. `RUST_LOG=debug` shows more.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use llm_gateway::Gateway;
use llm_gateway::config::GatewayConfig;
use tokio::net::TcpListener;

// NOTE: HTTP and JSON allocate on every request; jemalloc serves that faster than glibc's
// malloc under load (BENCHMARKS.md, "The gateway under load").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A resilient LLM gateway: OpenAI-compatible endpoints in front of retries, circuit
/// breakers, rate limits and fallbacks per provider.
#[derive(Debug, Parser)]
#[command(name = "llm-gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (README.md of llm-gateway has the full reference).
    #[arg(long, env = "GATEWAY_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on, overriding the file's `listen` (default 127.0.0.1:3000).
    #[arg(long, env = "GATEWAY_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Use the embedded mock providers even if API keys are set.
    #[cfg(feature = "demo")]
    #[arg(long, conflicts_with = "config")]
    mock: bool,
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, env = "GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration and probe every provider and route target (credentials
    /// accepted, model served) without spending tokens; exit 1 if any probe fails.
    Check,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The gateway narrates what the layers do through their hooks (retries, fallbacks, breaker
/// changes); the layers' own events join in at `RUST_LOG=debug`. `RUST_LOG` takes
/// `tracing-subscriber`'s `EnvFilter` directives (`info,llm_fallback_layer=debug`).
///
/// With `[telemetry]`'s OTLP endpoint set (and the `otlp` feature), spans are exported too,
/// through a filter of their own; the guard returned flushes them at exit.
fn init_logging(
    format: LogFormat,
    telemetry: Option<&llm_gateway::config::TelemetryConfig>,
) -> Result<Option<Traces>, llm_tower::ConfigError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    // NOTE: the library's request and attempt spans are at INFO (`llm_tower`,
    // `llm_providers`): kept out of the log, they cost nothing unless exported.
    const DEFAULT: &str = "info,llm_retry_layer=error,llm_breaker_layer=error,\
        llm_fallback_layer=error,llm_ratelimit_layer=error,llm_providers=error,llm_tower=warn";
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT));
    // Colours only on a terminal: a log file or a collector gets plain text.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stdout());
    // The log, for a subscriber of type `S`.
    fn log<S>(format: LogFormat, colours: bool) -> Box<dyn Layer<S> + Send + Sync>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        let log = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(colours);
        match format {
            LogFormat::Text => log.boxed(),
            LogFormat::Json => log.json().boxed(),
        }
    }
    #[cfg(feature = "otlp")]
    if let Some(telemetry) = telemetry {
        if let Some((export, guard)) = llm_gateway::telemetry::traces(telemetry)? {
            // Each its own filter: the export takes spans the log leaves out.
            tracing_subscriber::registry()
                .with(log(format, colours).with_filter(filter))
                .with(export)
                .init();
            return Ok(Some(guard));
        }
    }
    #[cfg(not(feature = "otlp"))]
    let _ = telemetry;
    // NOTE: one filter for the whole subscriber when only the log listens: what it leaves
    // out is never built.
    tracing_subscriber::registry()
        .with(filter)
        .with(log(format, colours))
        .init();
    Ok(None)
}

/// What keeps the span export going until exit.
#[cfg(feature = "otlp")]
type Traces = llm_gateway::telemetry::TracesGuard;
#[cfg(not(feature = "otlp"))]
type Traces = ();

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
    let cli = Cli::parse();
    let vars = |name: &str| std::env::var(name).ok();
    if let Some(Command::Check) = cli.command {
        let _ = init_logging(cli.log_format, None);
        return check(&cli, &vars).await;
    }

    // The mocks live as long as the gateway serves.
    #[cfg(feature = "demo")]
    let mut demo = None;
    let loaded = match &cli.config {
        Some(path) => {
            GatewayConfig::from_file(path, &vars).map(|c| (c, path.display().to_string()))
        }
        None => match GatewayConfig::from_env_keys(&vars) {
            #[cfg(feature = "demo")]
            Ok(_) if cli.mock => start_demo(&mut demo).await,
            Ok(Some(config)) => Ok((config, "API keys in the environment".to_owned())),
            Err(err) => Err(err),
            #[cfg(feature = "demo")]
            Ok(None) => start_demo(&mut demo).await,
            #[cfg(not(feature = "demo"))]
            Ok(None) => {
                eprintln!(
                    "llm-gateway: no --config and no provider API key in the environment \
                     (this build has no embedded mock providers: feature `demo`)"
                );
                return ExitCode::from(2);
            }
        },
    };
    let (mut config, source) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("llm-gateway: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    // NOTE: after the configuration is read, which says where spans are exported; reading
    // it logs nothing (its errors are printed).
    let _traces = match init_logging(cli.log_format, Some(&config.telemetry)) {
        Ok(traces) => traces,
        Err(err) => {
            eprintln!("llm-gateway: invalid configuration: {source}: {err}");
            return ExitCode::from(2);
        }
    };
    let gateway = match Gateway::from_config(&config, &source, &vars) {
        Ok(gateway) => gateway,
        Err(err) => {
            eprintln!("llm-gateway: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    gateway.install_global_recorder();
    if let Err(err) = gateway.check_exposure(config.listen) {
        eprintln!(
            "llm-gateway: refusing to start: {source}: `{}` {}",
            err.field(),
            err.reason()
        );
        return ExitCode::from(2);
    }
    if let Some(admin) = config.admin.listen {
        match TcpListener::bind(admin).await {
            Ok(listener) => {
                let router = gateway.admin_router();
                tracing::info!("/health and /metrics on http://{admin}");
                tokio::spawn(async move {
                    if let Err(err) = axum::serve(listener, router).await {
                        tracing::error!("the admin listener failed: {err}");
                    }
                });
            }
            Err(err) => {
                eprintln!("llm-gateway: cannot listen on {admin} (admin.listen): {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("llm-gateway: cannot listen on {}: {err}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map_or(config.listen, |a| a);
    tracing::info!(
        "llm-gateway on http://{addr} — providers: {} ({source})",
        gateway.provider_names().join(", ")
    );
    if !gateway.requires_key() {
        tracing::warn!(
            "no gateway keys configured: anyone who can reach {addr} may call \
             (allowed on loopback; elsewhere only with auth.allow_unauthenticated)"
        );
    }
    #[cfg(feature = "demo")]
    if let Some(demo) = &demo {
        for (name, mock) in &demo.mocks {
            tracing::info!("mock {name} at {}", mock.base_url());
        }
        println!(
            "\nTry:\n  curl -s localhost:{port}/api/chat -H 'content-type: application/json' -d '{{\"message\":\"Hello\"}}'\n  curl -s localhost:{port}/health\n  curl -s localhost:{port}/metrics\nand the live status page: http://localhost:{port}/status\n",
            port = addr.port()
        );
    }
    #[cfg(unix)]
    if let Some(path) = cli.config.clone() {
        tokio::spawn(reload_on_hangup(gateway.clone(), path, cli.listen, addr));
    }
    match gateway.serve(listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("llm-gateway: server error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the embedded mock providers and their configuration.
#[cfg(feature = "demo")]
async fn start_demo(
    demo: &mut Option<llm_gateway::demo::DemoProviders>,
) -> Result<(GatewayConfig, String), llm_gateway::config::ConfigFileError> {
    let mocks = match llm_gateway::demo::DemoProviders::start().await {
        Ok(mocks) => mocks,
        Err(err) => {
            eprintln!("llm-gateway: cannot start the mock providers: {err}");
            std::process::exit(1);
        }
    };
    let config = mocks.config()?;
    *demo = Some(mocks);
    Ok((config, "embedded mock providers".to_owned()))
}

/// Reads the file again at every SIGHUP and swaps the configuration in; a file that does not
/// load is refused, naming its field, and the configuration in force stays.
#[cfg(unix)]
async fn reload_on_hangup(
    gateway: Gateway,
    path: PathBuf,
    listen_override: Option<SocketAddr>,
    listening: SocketAddr,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP: the configuration will not be reloaded");
        return;
    };
    let vars = |name: &str| std::env::var(name).ok();
    while hangups.recv().await.is_some() {
        let source = path.display().to_string();
        let reloaded = GatewayConfig::from_file(&path, &vars).and_then(|mut config| {
            if let Some(listen) = listen_override {
                config.listen = listen;
            }
            gateway
                .reload(&config, &vars, Some(listening))
                .map_err(|error| llm_gateway::config::ConfigFileError {
                    source: source.clone(),
                    error,
                })
        });
        match reloaded {
            Ok(()) => {
                let providers = gateway.provider_names().join(", ");
                tracing::info!("configuration reloaded from {source} — providers: {providers}");
            }
            Err(err) => {
                tracing::error!("configuration reload refused, the one in force stays: {err}");
            }
        }
    }
}

/// `llm-gateway check`: the configuration validated, every provider and target probed.
async fn check(cli: &Cli, vars: &dyn Fn(&str) -> Option<String>) -> ExitCode {
    let loaded = match &cli.config {
        Some(path) => GatewayConfig::from_file(path, vars),
        None => match GatewayConfig::from_env_keys(vars) {
            Ok(Some(config)) => Ok(config),
            Ok(None) => {
                eprintln!(
                    "llm-gateway check: no --config and no provider API key in the environment"
                );
                return ExitCode::from(2);
            }
            Err(err) => Err(err),
        },
    };
    let config = match loaded {
        Ok(config) => config,
        Err(err) => {
            eprintln!("llm-gateway: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    let rows = match llm_gateway::check::check(&config, vars).await {
        Ok(rows) => rows,
        Err(err) => {
            eprintln!(
                "llm-gateway: invalid configuration: `{}` {}",
                err.field(),
                err.reason()
            );
            return ExitCode::from(2);
        }
    };
    print!("{}", llm_gateway::check::render_table(&rows));
    let failed = rows.iter().filter(|r| !r.passed()).count();
    if failed == 0 {
        println!("configuration valid; {} probe(s) passed", rows.len());
        ExitCode::SUCCESS
    } else {
        println!(
            "configuration valid; {failed} of {} probe(s) failed",
            rows.len()
        );
        ExitCode::FAILURE
    }
}
