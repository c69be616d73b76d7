//! Embeddings in each route's format: OpenAI's, Azure's and OpenRouter's `…/embeddings`,
//! Gemini's `:batchEmbedContents`, Ollama's `/api/embed`.
//!
//! The vectors are made up and deterministic: input `i` gets `[len(text), 0.1, 0.2, …]`, so a
//! test can tell the inputs' order. They have the `dimensions` asked for (default 8), unless
//! the model's name holds `dim<N>`: then always `N`, whatever was asked — a model of another
//! size, for fallback tests. The plan's faults apply as to chat (a rule's `stream` must be
//! unset or false to match).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::extract::Request;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::handler::{error_response, json_response};
use super::parse::{bearer, header_string, query_param, words};
use super::plan::{Fault, Route};
use super::state::{Shared, record, redacted_headers};
use super::transport::ConnControl;
use super::wire::{self, Exchange};

/// The vector length when none is asked for.
const DEFAULT_DIMENSIONS: usize = 8;

struct Asked {
    model: String,
    inputs: Vec<String>,
    dimensions: Option<usize>,
    key: Option<String>,
}

fn key_of(route: Route, headers: &HeaderMap, uri: &http::Uri) -> Option<String> {
    match route {
        Route::Azure => header_string(headers, "api-key").or_else(|| bearer(headers)),
        Route::Gemini => {
            header_string(headers, "x-goog-api-key").or_else(|| query_param(uri, "key"))
        }
        _ => bearer(headers),
    }
}

fn read(route: Route, uri: &http::Uri, headers: &HeaderMap, body: &[u8]) -> Result<Asked, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let size = |n: Option<&Value>| {
        n.and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
    };
    let key = key_of(route, headers, uri);
    let path = uri.path();
    match route {
        Route::Gemini => {
            let target = path.rsplit('/').next().unwrap_or_default();
            let model = target
                .strip_suffix(":batchEmbedContents")
                .ok_or("not an embeddings path")?
                .to_owned();
            let requests = v
                .get("requests")
                .and_then(Value::as_array)
                .ok_or("`requests` is required")?;
            if requests.len() > 100 {
                return Err("* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch".into());
            }
            let inputs = requests
                .iter()
                .map(|r| {
                    r.pointer("/content/parts/0/text")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or("each request needs content.parts[0].text")
                })
                .collect::<Result<Vec<_>, _>>()?;
            let dimensions = size(requests.first().and_then(|r| r.get("outputDimensionality")));
            Ok(Asked {
                model,
                inputs,
                dimensions,
                key,
            })
        }
        _ => {
            let model = match route {
                Route::Azure => path
                    .split('/')
                    .skip_while(|s| *s != "deployments")
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned(),
                _ => v
                    .get("model")
                    .and_then(Value::as_str)
                    .ok_or("`model` is required")?
                    .to_owned(),
            };
            let inputs = match v.get("input") {
                Some(Value::String(text)) => vec![text.clone()],
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_owned)
                            .ok_or("`input` must hold strings")
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err("`input` is required".into()),
            };
            if route != Route::Ollama && inputs.len() > 2048 {
                return Err("'$.input' is invalid: at most 2048 inputs".into());
            }
            Ok(Asked {
                model,
                inputs,
                dimensions: size(v.get("dimensions")),
                key,
            })
        }
    }
}

/// The vector for `text`.
fn vector(text: &str, dimensions: usize) -> Vec<f32> {
    #[allow(clippy::cast_precision_loss)]
    (0..dimensions)
        .map(|j| {
            if j == 0 {
                text.len() as f32
            } else {
                j as f32 / 10.0
            }
        })
        .collect()
}

fn dimensions_of(model: &str, asked: Option<usize>) -> usize {
    model
        .split("dim")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .or(asked)
        .unwrap_or(DEFAULT_DIMENSIONS)
}

fn answer(route: Route, asked: &Asked) -> Value {
    let dimensions = dimensions_of(&asked.model, asked.dimensions);
    let vectors: Vec<Vec<f32>> = asked.inputs.iter().map(|t| vector(t, dimensions)).collect();
    let tokens: u64 = asked.inputs.iter().map(|t| words(t).max(1)).sum();
    match route {
        Route::Gemini => json!({
            "embeddings": vectors.iter().map(|v| json!({"values": v})).collect::<Vec<_>>(),
        }),
        Route::Ollama => json!({
            "model": asked.model, "embeddings": vectors,
            "total_duration": 14_143_917, "load_duration": 1_019_500, "prompt_eval_count": tokens,
        }),
        _ => json!({
            "object": "list",
            "model": asked.model,
            "data": vectors.iter().enumerate()
                .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
                .collect::<Vec<_>>(),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
    }
}

pub(crate) async fn embed(route: Route, shared: Arc<Shared>, req: Request) -> Response {
    let control = req.extensions().get::<ConnControl>().cloned();
    let (parts, body) = req.into_parts();
    let request_id = format!("mock{:012}", shared.next_id.fetch_add(1, Ordering::Relaxed));
    let body = axum::body::to_bytes(body, 32 << 20)
        .await
        .unwrap_or_default();
    let logged = redacted_headers(&parts.headers);
    let asked = match read(route, &parts.uri, &parts.headers, &body) {
        Ok(asked) => asked,
        Err(message) => {
            record(
                &shared,
                route,
                &parts.uri,
                String::new(),
                false,
                logged,
                "bad_request".into(),
                Some(400),
            );
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}),
            );
        }
    };
    let mut fault = {
        let mut state = shared.lock();
        let elapsed = state.started.elapsed();
        let chosen = state.plan.rules.iter().enumerate().find_map(|(i, rule)| {
            if !rule.matches(route, &asked.model, false, elapsed) {
                return None;
            }
            let used = state.used[i];
            let fault = match &rule.fault {
                Some(f) => Some(f.clone()),
                None if used < rule.sequence.len() => Some(rule.sequence[used].clone()),
                None if rule.repeat && !rule.sequence.is_empty() => {
                    Some(rule.sequence[used % rule.sequence.len()].clone())
                }
                None => None,
            }?;
            Some((i, fault))
        });
        match chosen {
            Some((i, fault)) => {
                state.used[i] += 1;
                fault
            }
            None => Fault::Ok,
        }
    };
    // Ollama has no keys; every other route needs one (the one set, when the builder set one).
    let key_ok = route == Route::Ollama
        || match (&shared.api_key, &asked.key) {
            (Some(expected), Some(given)) => expected == given,
            (Some(_), None) => false,
            (None, given) => given.as_deref().is_some_and(|k| !k.is_empty()),
        };
    if !key_ok {
        fault = Fault::Unauthorized;
    }
    let log = |status: Option<u16>, label: String| {
        record(
            &shared,
            route,
            &parts.uri,
            asked.model.clone(),
            false,
            logged.clone(),
            label,
            status,
        );
    };
    match fault {
        Fault::Reset => {
            log(None, fault.label());
            if let Some(control) = control {
                control.reset();
            }
            return std::future::pending().await;
        }
        Fault::NoResponse => {
            log(None, fault.label());
            return std::future::pending().await;
        }
        _ => {}
    }
    let exchange = Exchange {
        route,
        model: asked.model.clone(),
        stream: false,
        include_usage: false,
        prompt_tokens: 0,
        tokens: Vec::new(),
        truncated: false,
        request_id: request_id.clone(),
        created: wire::unix_seconds(SystemTime::now()),
        calls: Vec::new(),
        thinking: None,
        logprobs: false,
        choices: 1,
    };
    if let Some(reply) = wire::error_reply(&exchange, &fault) {
        log(Some(reply.status), fault.label());
        return error_response(reply, &request_id, route);
    }
    log(Some(200), "ok".into());
    json_response(StatusCode::OK, &answer(route, &asked))
}
