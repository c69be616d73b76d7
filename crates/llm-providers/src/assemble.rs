//! [`Assembler`]: a streamed answer's chunks put back together — text, tool calls from
//! their pieces, reasoning blocks with their signatures.

use crate::conversation::{Reasoning, ToolCall};
use crate::types::{ChatChunk, ChatResponse, FinishReason};

/// Puts a streamed answer back together from its chunks.
///
/// Tool-call pieces join by their `index` (the first piece names the call, later pieces add
/// argument text); reasoning pieces join by theirs. A call that ends without an id gets one
/// made up (see [`ToolCall::MADE_UP_PREFIX`]).
///
/// ```
/// use llm_providers::{Assembler, ChatChunk, FinishReason};
///
/// let mut answer = Assembler::default();
/// answer.push(&ChatChunk::text("Hel"));
/// answer.push(&ChatChunk::text("lo"));
/// let response = answer.finish("mock", "m");
/// assert_eq!(response.text, "Hello");
/// ```
#[derive(Debug, Default)]
pub struct Assembler {
    text: String,
    refusal: Option<String>,
    logprobs: Option<serde_json::Value>,
    /// Choices after the first, by index: their deltas joined in OpenAI's message form.
    others: Vec<(u64, serde_json::Value)>,
    calls: Vec<(u32, ToolCall)>,
    reasoning: Vec<(u32, Reasoning)>,
    finish_reason: Option<FinishReason>,
    usage: Option<llm_core::Usage>,
}

impl Assembler {
    /// An assembler expecting about `text_len` bytes of text.
    pub fn with_capacity(text_len: usize) -> Self {
        Assembler {
            text: String::with_capacity(text_len),
            ..Assembler::default()
        }
    }

    /// Adds a chunk.
    pub fn push(&mut self, chunk: &ChatChunk) {
        self.text.push_str(&chunk.delta);
        if let Some(refusal) = &chunk.refusal {
            self.refusal.get_or_insert_default().push_str(refusal);
        }
        if let Some(piece) = &chunk.logprobs {
            join_logprobs(&mut self.logprobs, piece);
        }
        for choice in &chunk.other_choices {
            self.join_other(choice);
        }
        for piece in &chunk.tool_calls {
            let at = match self.calls.iter().position(|(i, _)| *i == piece.index) {
                Some(at) => at,
                None => {
                    self.calls
                        .push((piece.index, ToolCall::new("", "", String::new())));
                    self.calls.len() - 1
                }
            };
            let call = &mut self.calls[at].1;
            if let Some(id) = &piece.id {
                id.clone_into(&mut call.id);
            }
            if let Some(name) = &piece.name {
                call.name.push_str(name);
            }
            call.arguments.push_str(&piece.arguments);
            if piece.signature.is_some() {
                call.signature.clone_from(&piece.signature);
            }
        }
        if let Some(piece) = &chunk.reasoning {
            let at = match self.reasoning.iter().position(|(i, _)| *i == piece.index) {
                Some(at) => at,
                None => {
                    self.reasoning.push((piece.index, Reasoning::default()));
                    self.reasoning.len() - 1
                }
            };
            let block = &mut self.reasoning[at].1;
            block.text.push_str(&piece.text);
            if piece.signature.is_some() {
                block.signature.clone_from(&piece.signature);
            }
            if piece.redacted.is_some() {
                block.redacted.clone_from(&piece.redacted);
            }
            if piece.format.is_some() {
                block.format.clone_from(&piece.format);
            }
        }
        if chunk.finish_reason.is_some() {
            self.finish_reason.clone_from(&chunk.finish_reason);
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
    }

    /// Joins an OpenAI-format choice delta of index > 0 into that choice's message: text
    /// and refusal appended, tool-call fragments joined by their index, the finish reason
    /// kept.
    fn join_other(&mut self, choice: &serde_json::Value) {
        use serde_json::{Value, json};
        let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
        let at = match self.others.iter().position(|(i, _)| *i == index) {
            Some(at) => at,
            None => {
                let whole = json!({"index": index,
                    "message": {"role": "assistant", "content": null},
                    "finish_reason": null});
                self.others.push((index, whole));
                self.others.len() - 1
            }
        };
        let whole = &mut self.others[at].1;
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        let message = &mut whole["message"];
        for key in ["content", "refusal"] {
            if let Some(piece) = delta.get(key).and_then(Value::as_str) {
                let text = format!("{}{piece}", message[key].as_str().unwrap_or_default());
                message[key] = Value::from(text);
            }
        }
        for piece in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let calls = message
                .as_object_mut()
                .map(|m| m.entry("tool_calls").or_insert_with(|| json!([])));
            let Some(Value::Array(calls)) = calls else {
                continue;
            };
            let i = piece.get("index").and_then(Value::as_u64).unwrap_or(0);
            let call = match calls.iter().position(|c| c["index"] == i) {
                Some(at) => &mut calls[at],
                None => {
                    calls.push(json!({"index": i, "id": "", "type": "function",
                                      "function": {"name": "", "arguments": ""}}));
                    calls.last_mut().expect("just pushed")
                }
            };
            if let Some(id) = piece.get("id").and_then(Value::as_str) {
                call["id"] = Value::from(id);
            }
            for key in ["name", "arguments"] {
                if let Some(more) = piece
                    .pointer(&format!("/function/{key}"))
                    .and_then(Value::as_str)
                {
                    let text = format!(
                        "{}{more}",
                        call["function"][key].as_str().unwrap_or_default()
                    );
                    call["function"][key] = Value::from(text);
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
            whole["finish_reason"] = reason.clone();
        }
    }

    /// Whether a tool call has begun.
    pub fn has_tool_calls(&self) -> bool {
        !self.calls.is_empty()
    }

    /// The answer: `provider`'s `model` said it.
    pub fn finish(self, provider: &str, model: &str) -> ChatResponse {
        let mut response = ChatResponse::new(provider, model, self.text);
        response.refusal = self.refusal;
        response.logprobs = self.logprobs;
        response.other_choices = self.others.into_iter().map(|(_, c)| c).collect();
        response.tool_calls = self
            .calls
            .into_iter()
            .map(|(index, mut call)| {
                if call.id.is_empty() {
                    call.id = ToolCall::made_up_id(index as usize);
                }
                call
            })
            .collect();
        response.reasoning = self.reasoning.into_iter().map(|(_, r)| r).collect();
        response.finish_reason = self.finish_reason;
        response.usage = self.usage;
        response
    }
}

/// OpenAI's streamed `logprobs` pieces joined: their `content` (and `refusal`) lists one
/// after the other.
fn join_logprobs(whole: &mut Option<serde_json::Value>, piece: &serde_json::Value) {
    let Some(whole) = whole else {
        *whole = Some(piece.clone());
        return;
    };
    for key in ["content", "refusal"] {
        if let Some(more) = piece.get(key).and_then(serde_json::Value::as_array) {
            match whole.get_mut(key).and_then(serde_json::Value::as_array_mut) {
                Some(list) => list.extend(more.iter().cloned()),
                None => whole[key] = serde_json::Value::Array(more.clone()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::ToolCallDelta;

    fn piece(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> ChatChunk {
        ChatChunk {
            tool_calls: vec![ToolCallDelta {
                index,
                id: id.map(str::to_owned),
                name: name.map(str::to_owned),
                arguments: args.to_owned(),
                signature: None,
            }],
            ..ChatChunk::default()
        }
    }

    #[test]
    fn pieces_of_parallel_calls_join_by_index() {
        let mut a = Assembler::default();
        a.push(&piece(0, Some("call_a"), Some("add"), ""));
        a.push(&piece(0, None, None, "{\"a\":"));
        a.push(&piece(1, Some("call_b"), Some("mul"), "{}"));
        a.push(&piece(0, None, None, "2}"));
        let r = a.finish("p", "m");
        assert_eq!(r.tool_calls.len(), 2);
        assert_eq!(r.tool_calls[0].arguments, "{\"a\":2}");
        assert_eq!(r.tool_calls[0].id, "call_a");
        assert_eq!(r.tool_calls[1].name, "mul");
    }

    #[test]
    fn a_call_without_id_gets_a_made_up_one() {
        let mut a = Assembler::default();
        a.push(&piece(3, None, Some("f"), "{}"));
        let r = a.finish("p", "m");
        assert!(r.tool_calls[0].id.starts_with(ToolCall::MADE_UP_PREFIX));
        assert!(r.tool_calls[0].id.ends_with("_3"));
        assert!(!r.tool_calls[0].has_provider_id());
        let mut again = Assembler::default();
        again.push(&piece(3, None, Some("f"), "{}"));
        let again = again.finish("p", "m");
        assert_ne!(
            again.tool_calls[0].id, r.tool_calls[0].id,
            "no two calls share an id"
        );
    }
}
