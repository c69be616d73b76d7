//! One request: the fault the plan decides, then the answer in the route's format.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::limits::Refusal;
use super::parse::{bad_request, parse, query_param};
use super::plan::{DelayFormat, Fault, Route};
use super::send::{ChannelBody, send_stream};
use super::state::{Shared, record, redacted_headers};
use super::transport::ConnControl;
use super::wire::{self, ErrorReply, Exchange, canonical_answer, canonical_token};

/// The decision for one request, taken under the lock.
pub(crate) struct Decision {
    pub(crate) fault: Fault,
    pub(crate) label: String,
    pub(crate) latency: Duration,
    pub(crate) chunk_interval: Duration,
    pub(crate) extra_headers: Vec<(&'static str, String)>,
    /// A reply forced by the simulated budget, overriding the fault.
    pub(crate) budget_reply: Option<Fault>,
}

pub(crate) async fn handle(route: Route, shared: Arc<Shared>, req: Request) -> Response {
    let control = req.extensions().get::<ConnControl>().cloned();
    let (parts, body) = req.into_parts();
    let request_id = format!("mock{:012}", shared.next_id.fetch_add(1, Ordering::Relaxed));
    let body = match axum::body::to_bytes(body, 32 << 20).await {
        Ok(body) => body,
        Err(_) => Bytes::new(),
    };
    let parsed = parse(route, &parts.uri, &parts.headers, &body);
    let logged_headers = redacted_headers(&parts.headers);
    let (model, stream) = parsed
        .as_ref()
        .map_or((String::new(), false), |p| (p.model.clone(), p.stream));

    let mut parsed = match parsed {
        Ok(parsed) => parsed,
        Err(message) => {
            let reply = bad_request(route, &message, &request_id);
            record(
                &shared,
                route,
                &parts.uri,
                model,
                stream,
                logged_headers,
                "bad_request".into(),
                Some(400),
            );
            return error_response(reply, &request_id, route);
        }
    };

    // Build the answer before faults: the canonical answer, continued after a prefill that
    // is a prefix of it, cut by max_tokens.
    let (answer_tokens, decision) = {
        let mut state = shared.lock();
        let elapsed = state.started.elapsed();
        let answer_tokens = state.plan.answer_tokens;
        let mut fault = Fault::Ok;
        let mut label = "ok".to_owned();
        let mut latency = state.plan.latency;
        let mut chunk_interval = state.plan.chunk_interval;
        let mut chosen = None;
        for (i, rule) in state.plan.rules.iter().enumerate() {
            if !rule.matches(route, &parsed.model, parsed.stream, elapsed) {
                continue;
            }
            let used = state.used[i];
            let picked = if let Some(f) = &rule.fault {
                Some(f.clone())
            } else if used < rule.sequence.len() {
                Some(rule.sequence[used].clone())
            } else if rule.repeat {
                Some(rule.sequence[used % rule.sequence.len()].clone())
            } else {
                None
            };
            if let Some(f) = picked {
                chosen = Some(i);
                label = f.label();
                fault = f;
                latency = rule.latency.or(latency);
                chunk_interval = rule.chunk_interval.or(chunk_interval);
                break;
            }
        }
        if let Some(i) = chosen {
            state.used[i] += 1;
        }
        let latency = latency.map_or(Duration::ZERO, |l| {
            let mut rng = state.rng.clone();
            let d = l.draw(&mut rng);
            state.rng = rng;
            d
        });
        (
            answer_tokens,
            Decision {
                fault,
                label,
                latency,
                chunk_interval: chunk_interval.unwrap_or(Duration::ZERO),
                extra_headers: Vec::new(),
                budget_reply: None,
            },
        )
    };
    let mut decision = decision;
    if decision.fault == Fault::RejectPrefill && parsed.prefill.is_none() {
        decision.fault = Fault::Ok;
    }

    // The key: required on every route but Ollama; exact when the builder set one.
    let key_ok = match (&shared.api_key, &parsed.key) {
        (Some(expected), Some(given)) => expected == given,
        (Some(_), None) => false,
        (None, given) => route == Route::Ollama || given.as_deref().is_some_and(|k| !k.is_empty()),
    };
    if !key_ok {
        decision.fault = Fault::Unauthorized;
        decision.label = "unauthorized (key)".into();
    }

    let skip = parsed
        .prefill
        .as_deref()
        .and_then(|prefill| (1..=answer_tokens).find(|&k| canonical_answer(k) == prefill))
        .unwrap_or(0);
    let remaining = answer_tokens - skip;
    let limit = parsed
        .max_tokens
        .map_or(remaining, |m| (m as usize).clamp(1, remaining.max(1)));
    let mut tokens: Vec<String> = (skip..skip + limit.min(remaining))
        .map(canonical_token)
        .collect();
    let mut truncated = limit < remaining;
    let answer = std::mem::take(&mut parsed.answer);
    if let Some(text) = &answer.text {
        // A scripted answer streams word by word (each piece keeps its leading space).
        tokens = text.split_inclusive(' ').map(str::to_owned).collect();
        truncated = false;
    }
    if !answer.calls.is_empty() {
        tokens.clear();
        truncated = false;
    }
    let exchange = Exchange {
        choices: answer.choices.max(1),
        logprobs: answer.logprobs,
        calls: answer.calls,
        thinking: answer.thinking,
        route,
        model: parsed.model.clone(),
        stream: parsed.stream,
        include_usage: parsed.include_usage,
        prompt_tokens: parsed.prompt_tokens,
        truncated,
        tokens,
        request_id: request_id.clone(),
        created: wire::unix_seconds(SystemTime::now()),
    };

    // Charge the simulated budget for requests that would reach the model.
    if matches!(
        decision.fault,
        Fault::Ok
            | Fault::SlowFirstToken { .. }
            | Fault::CutAfter { .. }
            | Fault::StallAfter { .. }
            | Fault::MalformedAt { .. }
            | Fault::ErrorAfter { .. }
            | Fault::NoDone
    ) {
        let key = parsed.key.clone().unwrap_or_default();
        let cost = exchange.prompt_tokens + exchange.completion_tokens();
        let mut state = shared.lock();
        let sim = state.plan.rate_limit;
        match state.budgets.charge(sim, &key, cost, Instant::now()) {
            Ok(seen) => decision.extra_headers = seen.headers(route),
            Err(Refusal::Exhausted(wait, seen)) => {
                decision.extra_headers = seen.headers(route);
                decision.budget_reply = Some(Fault::RateLimited {
                    retry_after: Some(wait),
                    format: DelayFormat::Seconds,
                });
                decision.label = "rate_limit budget".into();
            }
            Err(Refusal::TooLarge(seen)) => {
                decision.extra_headers = seen.headers(route);
                decision.budget_reply = Some(Fault::RequestTooLarge);
                decision.label = "rate_limit budget (request too large)".into();
            }
        }
    }

    let log = |status: Option<u16>| {
        record(
            &shared,
            route,
            &parts.uri,
            exchange.model.clone(),
            exchange.stream,
            logged_headers.clone(),
            decision.label.clone(),
            status,
        );
    };

    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }

    let fault = decision
        .budget_reply
        .clone()
        .unwrap_or(decision.fault.clone());
    match fault {
        Fault::Reset => {
            log(None);
            if let Some(control) = control {
                control.reset();
            }
            return std::future::pending().await;
        }
        Fault::NoResponse => {
            log(None);
            return std::future::pending().await;
        }
        _ => {}
    }
    if let Some(mut reply) = wire::error_reply(&exchange, &fault) {
        log(Some(reply.status));
        reply.headers.extend(decision.extra_headers);
        return error_response(reply, &request_id, route);
    }
    let refusal = matches!(fault, Fault::ContentFilter)
        .then(|| wire::refusal(&exchange))
        .flatten();
    log(Some(200));

    let mut builder = Response::builder().status(StatusCode::OK);
    for (name, value) in request_id_headers(route, &request_id)
        .into_iter()
        .chain(decision.extra_headers)
    {
        if let Ok(value) = HeaderValue::from_str(&value) {
            builder = builder.header(name, value);
        }
    }

    if !exchange.stream {
        if let Fault::SlowFirstToken { delay } = fault {
            tokio::time::sleep(delay).await;
        }
        let body = match &refusal {
            Some((body, _)) => body.to_string(),
            None => wire::success_body(&exchange).to_string(),
        };
        let body = match fault {
            Fault::MalformedAt { .. } => body[..body.len() / 2].to_owned(),
            _ => body,
        };
        return builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap_or_default();
    }

    let content_type = if route == Route::Ollama {
        "application/x-ndjson"
    } else {
        "text/event-stream"
    };
    let gemini_array =
        route == Route::Gemini && query_param(&parts.uri, "alt").as_deref() != Some("sse");
    let frames = match refusal {
        Some((_, frames)) => frames,
        None => wire::stream_frames(&exchange, matches!(fault, Fault::NoDone)),
    };
    if gemini_array {
        // Without `alt=sse` Gemini streams one JSON array; send it whole.
        let items: Vec<String> = frames
            .iter()
            .map(|f| {
                let bytes = f.bytes();
                let text = String::from_utf8_lossy(&bytes);
                text.trim_start_matches("data: ").trim_end().to_owned()
            })
            .collect();
        return builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(format!("[{}]", items.join(",\r\n"))))
            .unwrap_or_default();
    }
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(send_stream(
        frames,
        fault,
        exchange,
        decision.chunk_interval,
        tx,
    ));
    builder
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(ChannelBody(rx)))
        .unwrap_or_default()
}

pub(crate) fn request_id_headers(route: Route, request_id: &str) -> Vec<(&'static str, String)> {
    match route {
        Route::OpenAi => vec![
            ("x-request-id", format!("req_{request_id}")),
            ("openai-processing-ms", "42".into()),
        ],
        Route::Azure => vec![
            ("apim-request-id", request_id.to_owned()),
            ("x-request-id", request_id.to_owned()),
            ("x-ms-region", "Mock Region".into()),
        ],
        Route::OpenRouter => vec![("x-generation-id", format!("gen-{request_id}"))],
        Route::Anthropic => vec![("request-id", format!("req_{request_id}"))],
        Route::Gemini => vec![("x-goog-request-id", request_id.to_owned())],
        Route::Ollama => Vec::new(),
    }
}

pub(crate) fn error_response(reply: ErrorReply, request_id: &str, route: Route) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, reply.content_type);
    let mut seen: HashMap<&str, ()> = HashMap::new();
    for (name, value) in reply
        .headers
        .into_iter()
        .chain(request_id_headers(route, request_id))
    {
        // The fault's own headers win over generic ones of the same name.
        if seen.insert(name, ()).is_some() {
            continue;
        }
        if let Ok(value) = HeaderValue::from_str(&value) {
            builder = builder.header(name, value);
        }
    }
    builder.body(Body::from(reply.body)).unwrap_or_default()
}

/// A JSON answer with `status`.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}
