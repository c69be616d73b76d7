//! Checking a configuration before traffic: every provider and route target probed
//! (`Provider::probe`: credentials accepted, model served), for `llm-gateway check` and
//! `/health`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use llm_providers::Provider;
use llm_tower::{ConfigError, LlmError};
use serde_json::json;

use crate::config::{GatewayConfig, Lookup};

/// One probe: a provider, a model it is asked for, and what the probe found.
#[derive(Clone, Debug)]
pub struct CheckRow {
    /// The provider's configured name.
    pub provider: String,
    /// The model the configuration asks it for.
    pub model: String,
    /// How long the probe took, or why it failed (classified as a call's failure).
    pub result: Result<CheckPassed, LlmError>,
}

/// A probe that passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckPassed {
    /// How long the provider took to answer.
    pub latency: Duration,
    /// Whether the model was confirmed (Azure deployments, and OpenAI-compatible servers
    /// without a listing, are reached but not confirmed).
    pub model_confirmed: bool,
}

impl CheckRow {
    /// Whether the probe passed.
    pub fn passed(&self) -> bool {
        self.result.is_ok()
    }

    /// The row as `/health` shows it.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match &self.result {
            Ok(passed) => json!({
                "provider": self.provider,
                "model": self.model,
                "ok": true,
                "modelConfirmed": passed.model_confirmed,
                "latencyMs": u64::try_from(passed.latency.as_millis()).unwrap_or(u64::MAX),
            }),
            Err(err) => json!({
                "provider": self.provider,
                "model": self.model,
                "ok": false,
                "error": err.kind().as_str(),
                "message": err.to_string(),
            }),
        }
    }
}

/// Validates `config`, builds its providers and probes each (provider, model) pair it would
/// call: every provider's own model and every route target's. An invalid configuration is
/// an error naming its field; failed probes are rows that did not pass.
pub async fn check(config: &GatewayConfig, vars: Lookup<'_>) -> Result<Vec<CheckRow>, ConfigError> {
    let mut providers = Vec::with_capacity(config.providers.len());
    for (i, settings) in config.providers.iter().enumerate() {
        let own = crate::stack::providers_of(settings, vars)
            .map_err(|e| e.in_section(&format!("providers[{i}]")))?;
        providers.extend(
            own.into_iter()
                .map(|(label, provider)| (settings.name.clone(), label, provider)),
        );
    }
    Ok(probe_all(pairs(config, &providers)).await)
}

/// Each (provider, model) `config` would call, once, in the configuration's order; a pool's
/// members each (`providers`: configured name, label — the name, or `name/member` — and
/// provider).
pub(crate) fn pairs(
    config: &GatewayConfig,
    providers: &[(String, String, Provider)],
) -> Vec<(String, Provider, String)> {
    let mut pairs: Vec<(String, Provider, String)> = Vec::new();
    let mut add = |name: &str, model: &str| {
        for (_, label, provider) in providers.iter().filter(|(n, _, _)| n == name) {
            if !pairs.iter().any(|(l, _, m)| l == label && m == model) {
                pairs.push((label.clone(), provider.clone(), model.to_owned()));
            }
        }
    };
    for settings in &config.providers {
        add(&settings.name, &settings.model);
    }
    for route in &config.effective_routes() {
        for target in &route.targets {
            let model = target.model.clone().or_else(|| {
                config
                    .providers
                    .iter()
                    .find(|p| p.name == target.provider)
                    .map(|p| p.model.clone())
            });
            if let Some(model) = model {
                add(&target.provider, &model);
            }
        }
    }
    pairs
}

/// Probes every pair at once.
pub(crate) async fn probe_all(pairs: Vec<(String, Provider, String)>) -> Vec<CheckRow> {
    let probes = pairs.into_iter().map(|(name, provider, model)| async move {
        let result = provider.probe(&model).await.map(|probe| CheckPassed {
            latency: probe.latency,
            model_confirmed: probe.model_confirmed,
        });
        CheckRow {
            provider: name,
            model,
            result,
        }
    });
    futures_util::future::join_all(probes).await
}

/// The rows as a table for a terminal.
pub fn render_table(rows: &[CheckRow]) -> String {
    let width = |f: fn(&CheckRow) -> usize, title: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(title.len())
    };
    let (p, m) = (
        width(|r| r.provider.len(), "provider"),
        width(|r| r.model.len(), "model"),
    );
    let mut out = format!("{:p$}  {:m$}  result\n", "provider", "model");
    for row in rows {
        let result = match &row.result {
            Ok(passed) if passed.model_confirmed => {
                format!("ok ({} ms)", passed.latency.as_millis())
            }
            Ok(passed) => format!(
                "reached, model not confirmed by the provider ({} ms)",
                passed.latency.as_millis()
            ),
            Err(err) => format!("FAILED {}: {err}", err.kind().as_str()),
        };
        out.push_str(&format!(
            "{:p$}  {:m$}  {result}\n",
            row.provider, row.model
        ));
    }
    out
}

/// The last probe of each pair, as `/health` shows it: filled in the background when the
/// gateway starts or reloads.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProbeResults(Arc<Mutex<Vec<CheckRow>>>);

impl ProbeResults {
    /// Probes `pairs` in the background on the current runtime (none: no probes).
    pub(crate) fn start(pairs: Vec<(String, Provider, String)>) -> ProbeResults {
        let results = ProbeResults::default();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let filled = results.clone();
            runtime.spawn(async move {
                let rows = probe_all(pairs).await;
                for row in rows.iter().filter(|r| !r.passed()) {
                    if let Err(err) = &row.result {
                        tracing::warn!("probe of {} ({}) failed: {err}", row.provider, row.model);
                    }
                }
                *filled.0.lock().expect("never poisoned") = rows;
            });
        }
        results
    }

    /// The rows of `provider` (empty until its probes answered).
    pub(crate) fn of(&self, provider: &str) -> Vec<serde_json::Value> {
        self.0
            .lock()
            .expect("never poisoned")
            .iter()
            .filter(|row| {
                row.provider == provider
                    || row
                        .provider
                        .strip_prefix(provider)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .map(CheckRow::to_json)
            .collect()
    }
}
