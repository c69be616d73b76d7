//! Model listings — what a provider's cheap probe reads (`Provider::probe` in
//! llm-providers): OpenAI's and OpenRouter's `GET …/models`, Anthropic's `GET
//! /v1/models/{model}`, Azure's `GET /openai/models`, Gemini's `GET /v1beta/models/{model}`,
//! Ollama's `GET /api/tags`. Answered from the builder's model list after the same key check
//! as a chat call, in each provider's shape; listings are not chat attempts and stay out of
//! the attempt log.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use super::handler::{error_response, json_response};
use super::parse::{bearer, header_string, query_param};
use super::plan::{Fault, Route};
use super::state::Shared;
use super::wire::{Exchange, error_reply};

/// The models a mock lists when its builder named none.
pub(crate) const DEFAULT_MODELS: [&str; 8] = [
    "gpt-4o",
    "gpt-4o-mini",
    "claude-3-5-haiku-latest",
    "claude-sonnet-4-5",
    "gemini-2.0-flash",
    "gemini-2.5-pro",
    "llama3.2",
    "qwen2.5-7b",
];

/// Answers a listing (`model`: the one model asked for, on routes that name it).
pub(crate) fn list(
    route: Route,
    shared: &Arc<Shared>,
    request: &Request,
    model: Option<&str>,
) -> Response {
    let headers = request.headers();
    let given = match route {
        Route::OpenAi | Route::OpenRouter => bearer(headers),
        Route::Azure => header_string(headers, "api-key"),
        Route::Anthropic => header_string(headers, "x-api-key"),
        Route::Gemini => {
            header_string(headers, "x-goog-api-key").or_else(|| query_param(request.uri(), "key"))
        }
        Route::Ollama => None,
    };
    let key_ok = match (&shared.api_key, &given) {
        (Some(expected), Some(given)) => expected == given,
        (Some(_), None) => route == Route::Ollama,
        (None, given) => route == Route::Ollama || given.as_deref().is_some_and(|k| !k.is_empty()),
    };
    let models = shared
        .models
        .clone()
        .unwrap_or_else(|| DEFAULT_MODELS.iter().map(|m| (*m).to_owned()).collect());
    let refuse = |fault: Fault, model: &str| {
        let exchange = Exchange::listing(route, model);
        let reply = error_reply(&exchange, &fault).expect("a key or model fault is an error reply");
        error_response(reply, &exchange.request_id, route)
    };
    if !key_ok {
        return refuse(Fault::Unauthorized, model.unwrap_or(""));
    }
    if let Some(model) = model {
        if !models.iter().any(|m| m == model) {
            return refuse(Fault::ModelNotFound, model);
        }
    }
    let body: Value = match route {
        Route::OpenAi | Route::Azure | Route::OpenRouter => json!({
            "object": "list",
            "data": models.iter().map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "mock"})).collect::<Vec<_>>(),
        }),
        Route::Anthropic => {
            let id = model.unwrap_or_default();
            json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z"})
        }
        Route::Gemini => {
            let id = model.unwrap_or_default();
            json!({"name": format!("models/{id}"), "displayName": id, "supportedGenerationMethods": ["generateContent"]})
        }
        Route::Ollama => json!({
            "models": models.iter().map(|m| {
                let name = if m.contains(':') { m.clone() } else { format!("{m}:latest") };
                json!({"name": name, "model": name, "size": 0})
            }).collect::<Vec<_>>(),
        }),
    };
    json_response(StatusCode::OK, &body)
}
