//! `POST /v1/embeddings`: OpenAI's embeddings API, routed by model to a chain of targets of
//! one vector size.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::future::Either;
use llm_providers::{EmbeddingRequest, EmbeddingResponse};
use llm_tower::Deadline;
use serde::Deserialize;
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};

use super::auth::{CallerKey, check_model};
use super::dispatch::{Traced, upstream_trace};
use super::error::ApiError;
use super::gateway::{Current, EmbeddingRoute};
use super::respond::{answered, read_json};

/// OpenAI's limit on inputs in one request.
const MAX_INPUTS: usize = 2048;

/// `POST /v1/embeddings`' body: OpenAI's fields, no others (its schema allows none).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsBody {
    model: String,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default)]
    user: Option<String>,
}

pub(crate) async fn embeddings(
    gw: Current,
    caller: CallerKey,
    trace: Traced,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = embeddings_inner(&gw, &caller, trace, body).await;
    answered(&gw, "/v1/embeddings", started, result)
}

fn inputs(input: Value) -> Result<Vec<String>, ApiError> {
    let bad = |message: &str| ApiError::invalid(message).param("input");
    let inputs = match input {
        Value::String(text) => vec![text],
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(text),
                Value::Number(_) | Value::Array(_) => Err(bad(
                    "token arrays are not supported by this gateway (its upstreams take text): send strings",
                )),
                _ => Err(bad("`input` must be a string or an array of strings")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(bad("`input` must be a string or an array of strings")),
    };
    if inputs.is_empty() {
        return Err(bad("`input` must hold at least one string"));
    }
    if inputs.len() > MAX_INPUTS {
        return Err(bad(&format!(
            "`input` holds {} strings; at most {MAX_INPUTS}",
            inputs.len()
        )));
    }
    if inputs.iter().any(String::is_empty) {
        return Err(bad("`input` cannot hold an empty string"));
    }
    Ok(inputs)
}

fn route_for<'a>(gw: &'a Current, model: &str) -> Result<&'a EmbeddingRoute, ApiError> {
    gw.inner
        .embedding_routes
        .iter()
        .find(|r| r.model == model)
        .ok_or_else(|| {
            let routed: Vec<&str> = gw
                .inner
                .embedding_routes
                .iter()
                .map(|r| r.model.as_str())
                .collect();
            ApiError {
                status: StatusCode::NOT_FOUND,
                ..ApiError::invalid(format!(
                    "the embedding model {model:?} is not routed by this gateway (routed: {})",
                    routed.join(", ")
                ))
                .param("model")
                .code("model_not_found")
            }
        })
}

async fn embeddings_inner(
    gw: &Current,
    caller: &CallerKey,
    trace: Traced,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: EmbeddingsBody = read_json(body)?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`encoding_format` must be \"float\" or \"base64\" (got {other:?})"
            ))
            .param("encoding_format"));
        }
    };
    check_model(caller, &request.model)?;
    let route = route_for(gw, &request.model)?;
    if let Some(asked) = request.dimensions {
        if asked != route.dimensions {
            return Err(ApiError::invalid(format!(
                "the route {:?} answers vectors of {} dimensions (got `dimensions: {asked}`)",
                route.model, route.dimensions
            ))
            .param("dimensions"));
        }
    }
    let mut embed = EmbeddingRequest::new(request.model.clone(), inputs(request.input)?);
    if let Some(user) = request.user {
        embed = embed.end_user(user);
    }
    embed
        .extensions_mut()
        .insert(Deadline::after(gw.inner.request_timeout));
    if let Some(context) = upstream_trace(trace) {
        embed.extensions_mut().insert(context);
    }
    let chain = route.chain.clone();
    let call = match caller.as_ref().and_then(|key| key.limit.as_ref()) {
        Some(limit) => Either::Left(limit.layer(chain).oneshot(embed)),
        None => Either::Right(chain.oneshot(embed)),
    };
    let answer = gw
        .within_deadline(call)
        .await
        .map_err(|err| ApiError::from_llm(&err))?;
    let mut response = axum::Json(list(&request.model, &answer, base64)).into_response();
    if let Ok(value) = HeaderValue::from_str(&answer.provider) {
        response.headers_mut().insert("x-gateway-provider", value);
    }
    Ok(response)
}

/// The answer as OpenAI's list: one entry per input, in order; base64 is the vector's
/// little-endian `f32` bytes (what the SDKs decode with `numpy.frombuffer`).
fn list(model: &str, answer: &EmbeddingResponse, base64: bool) -> Value {
    let data: Vec<Value> = answer
        .embeddings
        .iter()
        .enumerate()
        .map(|(i, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens = answer.usage.map_or(0, |u| u.input_tokens);
    json!({
        "object": "list",
        "data": data,
        "model": if answer.model.is_empty() { model } else { answer.model.as_str() },
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
}
