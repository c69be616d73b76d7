//! Each provider's embeddings wire format: the body sent for a batch of inputs and the
//! vectors read back.
//!
//! - OpenAI, Azure, OpenRouter, OpenAI-compatible: `POST …/embeddings`
//!   `{"model", "input": [...], "encoding_format": "float", "dimensions"?, "user"?}` →
//!   `{"data": [{"index", "embedding": [...]}], "usage": {"prompt_tokens"}}`; at most 2,048
//!   inputs a call.
//! - Gemini: `POST …/models/{model}:batchEmbedContents`
//!   `{"requests": [{"model": "models/{model}", "content": {"parts": [{"text"}]},
//!   "outputDimensionality"?}]}` → `{"embeddings": [{"values": [...]}]}`; at most 100 a call.
//! - Ollama: `POST /api/embed` `{"model", "input": [...], "dimensions"?}` →
//!   `{"embeddings": [[...]], "prompt_eval_count"}`.
//! - Anthropic has no embeddings API.

use llm_core::{LlmError, Usage};
use serde_json::{Map, Value, json};

use super::{malformed, u64_at};
use crate::embedding::EmbeddingRequest;
use crate::kind::ProviderKind;

/// The most inputs one call of `kind` takes (OpenAI's documented 2,048, Gemini's 100;
/// Ollama documents none, and a smaller batch bounds one call's time).
pub(crate) const fn max_batch(kind: ProviderKind) -> usize {
    match kind {
        ProviderKind::Gemini => 100,
        ProviderKind::Ollama => 512,
        _ => 2048,
    }
}

/// The body embedding `inputs` (a batch of `req`'s) for `kind`.
pub(crate) fn body(kind: ProviderKind, req: &EmbeddingRequest, inputs: &[String]) -> Value {
    use llm_core::ModelRequest;
    match kind {
        ProviderKind::Gemini => {
            let model = format!("models/{}", req.model());
            let requests: Vec<Value> = inputs
                .iter()
                .map(|text| {
                    let mut one = Map::new();
                    one.insert("model".into(), model.clone().into());
                    one.insert("content".into(), json!({"parts": [{"text": text}]}));
                    if let Some(n) = req.dimensions_value() {
                        one.insert("outputDimensionality".into(), n.into());
                    }
                    Value::Object(one)
                })
                .collect();
            json!({ "requests": requests })
        }
        ProviderKind::Ollama => {
            let mut body = Map::new();
            body.insert("model".into(), req.model().into());
            body.insert("input".into(), inputs.into());
            if let Some(n) = req.dimensions_value() {
                body.insert("dimensions".into(), n.into());
            }
            Value::Object(body)
        }
        _ => {
            let mut body = Map::new();
            body.insert("model".into(), req.model().into());
            body.insert("input".into(), inputs.into());
            body.insert("encoding_format".into(), "float".into());
            if let Some(n) = req.dimensions_value() {
                body.insert("dimensions".into(), n.into());
            }
            if let Some(user) = req.end_user_value() {
                body.insert("user".into(), user.into());
            }
            Value::Object(body)
        }
    }
}

/// What one batch answered: its vectors in input order, its usage, the model named.
pub(crate) struct Batch {
    pub(crate) vectors: Vec<Vec<f32>>,
    pub(crate) usage: Option<Usage>,
    pub(crate) model: Option<String>,
}

fn floats(v: &Value, kind: ProviderKind) -> Result<Vec<f32>, LlmError> {
    let items = v
        .as_array()
        .ok_or_else(|| malformed(kind, "an embedding is not an array of numbers"))?;
    items
        .iter()
        .map(|x| {
            // Vectors are stored as f32 everywhere (the precision providers compute in).
            #[allow(clippy::cast_possible_truncation)]
            x.as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| malformed(kind, "an embedding holds a value that is not a number"))
        })
        .collect()
}

/// Reads a batch's vectors; exactly `expected` of them, or the answer is malformed.
pub(crate) fn parse(kind: ProviderKind, body: &[u8], expected: usize) -> Result<Batch, LlmError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|err| malformed(kind, &format!("the body is not JSON ({err})")))?;
    let model = v.get("model").and_then(Value::as_str).map(str::to_owned);
    let (vectors, usage) = match kind {
        ProviderKind::Gemini => {
            let items = v
                .get("embeddings")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed(kind, "no embeddings"))?;
            let vectors = items
                .iter()
                .map(|e| floats(e.get("values").unwrap_or(&Value::Null), kind))
                .collect::<Result<Vec<_>, _>>()?;
            (vectors, None)
        }
        ProviderKind::Ollama => {
            let items = v
                .get("embeddings")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed(kind, "no embeddings"))?;
            let vectors = items
                .iter()
                .map(|e| floats(e, kind))
                .collect::<Result<Vec<_>, _>>()?;
            let usage = u64_at(&v, "/prompt_eval_count").map(|n| Usage::new(n, 0));
            (vectors, usage)
        }
        _ => {
            let items = v
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed(kind, "no data"))?;
            let mut slots: Vec<Option<Vec<f32>>> = vec![None; items.len()];
            for (i, item) in items.iter().enumerate() {
                let index = item
                    .get("index")
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(i);
                let slot = slots
                    .get_mut(index)
                    .ok_or_else(|| malformed(kind, "an embedding's index is out of range"))?;
                *slot = Some(floats(item.get("embedding").unwrap_or(&Value::Null), kind)?);
            }
            let vectors = slots
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| malformed(kind, "two embeddings share an index"))?;
            let usage = u64_at(&v, "/usage/prompt_tokens").map(|n| Usage::new(n, 0));
            (vectors, usage)
        }
    };
    if vectors.len() != expected {
        return Err(malformed(
            kind,
            &format!("{} embeddings for {expected} inputs", vectors.len()),
        ));
    }
    Ok(Batch {
        vectors,
        usage,
        model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_vectors_come_back_in_input_order() {
        let body = br#"{"data":[{"index":1,"embedding":[0.5]},{"index":0,"embedding":[0.25]}],"model":"m","usage":{"prompt_tokens":4}}"#;
        let batch = parse(ProviderKind::OpenAi, body, 2).unwrap();
        assert_eq!(batch.vectors, vec![vec![0.25], vec![0.5]]);
        assert_eq!(batch.usage.unwrap().input_tokens, 4);
    }

    #[test]
    fn a_missing_or_extra_vector_is_a_malformed_answer() {
        let body = br#"{"embeddings":[{"values":[1.0]}]}"#;
        let err = parse(ProviderKind::Gemini, body, 2).err().unwrap();
        assert!(
            err.to_string().contains("1 embeddings for 2 inputs"),
            "{err}"
        );
        let err = parse(
            ProviderKind::OpenAi,
            br#"{"data":[{"index":0,"embedding":"x"}]}"#,
            1,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("not an array"), "{err}");
        assert!(parse(ProviderKind::Ollama, b"<html>", 1).is_err());
    }

    #[test]
    fn gemini_and_ollama_bodies_carry_the_dimensions() {
        let req = EmbeddingRequest::new("e", ["a", "b"]).dimensions(8);
        let gemini = body(ProviderKind::Gemini, &req, req.inputs());
        assert_eq!(gemini["requests"][1]["content"]["parts"][0]["text"], "b");
        assert_eq!(gemini["requests"][0]["outputDimensionality"], 8);
        assert_eq!(gemini["requests"][0]["model"], "models/e");
        let ollama = body(ProviderKind::Ollama, &req, req.inputs());
        assert_eq!(ollama["dimensions"], 8);
        let openai = body(ProviderKind::OpenAi, &req, &req.inputs()[1..]);
        assert_eq!(openai["input"], json!(["b"]));
        assert_eq!(openai["encoding_format"], "float");
    }
}
