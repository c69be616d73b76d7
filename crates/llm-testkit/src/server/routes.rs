//! The HTTP routes: the six providers' chat, embeddings and model-listing endpoints, and
//! the admin API.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::{get, post, put};
use bytes::Bytes;
use http::StatusCode;

use super::embeddings::embed;
use super::handler::{handle, json_response};
use super::models::list;
use super::plan::{Plan, Route};
use super::state::{ServerState, Shared};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    macro_rules! route_handler {
        ($route:expr) => {
            post(|State(s): State<Arc<Shared>>, req: Request| handle($route, s, req))
        };
    }
    macro_rules! embeddings {
        ($route:expr) => {
            post(|State(s): State<Arc<Shared>>, req: Request| embed($route, s, req))
        };
    }
    macro_rules! listing {
        ($route:expr) => {
            get(|State(s): State<Arc<Shared>>, req: Request| async move {
                list($route, &s, &req, None)
            })
        };
        ($route:expr, model) => {
            get(
                |State(s): State<Arc<Shared>>, Path(model): Path<String>, req: Request| async move {
                    list($route, &s, &req, Some(&model))
                },
            )
        };
    }
    Router::new()
        .route("/v1/models", listing!(Route::OpenAi))
        .route("/v1/models/{model}", listing!(Route::Anthropic, model))
        .route("/api/v1/models", listing!(Route::OpenRouter))
        .route("/openai/models", listing!(Route::Azure))
        .route("/api/tags", listing!(Route::Ollama))
        .route("/v1/chat/completions", route_handler!(Route::OpenAi))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            route_handler!(Route::Azure),
        )
        .route(
            "/api/v1/chat/completions",
            route_handler!(Route::OpenRouter),
        )
        .route("/v1/messages", route_handler!(Route::Anthropic))
        .route(
            "/v1beta/models/{target}",
            post(|State(s): State<Arc<Shared>>, req: Request| async move {
                if req.uri().path().ends_with(":batchEmbedContents") {
                    embed(Route::Gemini, s, req).await
                } else {
                    handle(Route::Gemini, s, req).await
                }
            })
            .merge(listing!(Route::Gemini, model)),
        )
        .route("/api/chat", route_handler!(Route::Ollama))
        .route("/v1/embeddings", embeddings!(Route::OpenAi))
        .route(
            "/openai/deployments/{deployment}/embeddings",
            embeddings!(Route::Azure),
        )
        .route("/api/v1/embeddings", embeddings!(Route::OpenRouter))
        .route("/api/embed", embeddings!(Route::Ollama))
        .route("/__mock/attempts", get(admin_attempts))
        .route("/__mock/reset", post(admin_reset))
        .route("/__mock/plan", put(admin_plan))
        .with_state(shared)
}

pub(crate) async fn admin_attempts(State(shared): State<Arc<Shared>>) -> Response {
    let log = shared.lock().log.clone();
    json_response(
        StatusCode::OK,
        &serde_json::to_value(log).unwrap_or_default(),
    )
}

pub(crate) async fn admin_reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    let mut state = shared.lock();
    let plan = state.plan.clone();
    *state = ServerState::new(plan);
    StatusCode::NO_CONTENT
}

pub(crate) async fn admin_plan(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    match Plan::from_toml(&text) {
        Ok(plan) => {
            *shared.lock() = ServerState::new(plan);
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Body::empty())
                .unwrap_or_default()
        }
        Err(err) => json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": err.to_string(), "field": err.field()}),
        ),
    }
}
