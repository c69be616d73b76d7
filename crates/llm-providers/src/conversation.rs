//! What a conversation carries beyond text: content parts (images, documents), tools and
//! their calls, structured output, reasoning. Provider-neutral; each wire format translates
//! them (`docs/conversations.md`).

use std::borrow::Cow;

use serde_json::Value;

/// What a message says: text, or parts (text, images, documents) in order.
///
/// Text is the common case and costs one `String`; parts are only for messages that need
/// them.
///
/// ```
/// use llm_providers::{Content, Media, Part};
///
/// let text = Content::from("Hi");
/// assert_eq!(text.as_text(), Some("Hi"));
/// let parts = Content::Parts(vec![
///     Part::Text("What is this?".into()),
///     Part::Image(Media::url("https://example.com/cat.png")),
/// ]);
/// assert_eq!(parts.text(), "What is this?");
/// assert!(parts.has_media());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts, in order.
    Parts(Vec<Part>),
}

impl Default for Content {
    fn default() -> Self {
        Content::Text(String::new())
    }
}

impl Content {
    /// The content when it is plain text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Content::Text(text) => Some(text),
            Content::Parts(_) => None,
        }
    }

    /// The text of the content: plain text as it is, the text parts joined (media left out).
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Content::Text(text) => Cow::Borrowed(text),
            Content::Parts(parts) => {
                let mut texts = parts.iter().filter_map(Part::as_text);
                match (texts.next(), texts.next()) {
                    (None, _) => Cow::Borrowed(""),
                    (Some(only), None) => Cow::Borrowed(only),
                    (Some(first), Some(second)) => {
                        let mut all = format!("{first}{second}");
                        texts.for_each(|t| all.push_str(t));
                        Cow::Owned(all)
                    }
                }
            }
        }
    }

    /// Whether there is nothing at all: no text, no part.
    pub fn is_empty(&self) -> bool {
        match self {
            Content::Text(text) => text.is_empty(),
            Content::Parts(parts) => parts.is_empty(),
        }
    }

    /// Whether a part is an image or a document.
    pub fn has_media(&self) -> bool {
        match self {
            Content::Text(_) => false,
            Content::Parts(parts) => parts.iter().any(|p| !matches!(p, Part::Text(_))),
        }
    }

    /// The parts (one text part for plain text).
    pub fn parts(&self) -> Cow<'_, [Part]> {
        match self {
            Content::Text(text) => Cow::Owned(vec![Part::Text(text.clone())]),
            Content::Parts(parts) => Cow::Borrowed(parts),
        }
    }
}

impl From<String> for Content {
    fn from(text: String) -> Self {
        Content::Text(text)
    }
}

impl From<&str> for Content {
    fn from(text: &str) -> Self {
        Content::Text(text.to_owned())
    }
}

impl From<Vec<Part>> for Content {
    fn from(parts: Vec<Part>) -> Self {
        Content::Parts(parts)
    }
}

/// One part of a message's content.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Part {
    /// Text.
    Text(String),
    /// An image (OpenAI `image_url`, Anthropic `image`, Gemini `inlineData`/`fileData`,
    /// Ollama `images`).
    Image(Media),
    /// A document such as a PDF (OpenAI `file`, Anthropic `document`, Gemini `inlineData`).
    Document(Media),
}

impl Part {
    /// The text of a text part.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Part::Text(text) => Some(text),
            _ => None,
        }
    }
}

/// An image or document: where its bytes are, and what they are.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Media {
    /// The bytes, inline or by URL.
    pub source: MediaSource,
    /// The media type (`image/png`, `application/pdf`); required by some providers for
    /// inline data.
    pub media_type: Option<String>,
    /// OpenAI's image `detail` (`auto`, `low`, `high`), for the providers that read it.
    pub detail: Option<String>,
    /// A file name (OpenAI's `file.filename`).
    pub filename: Option<String>,
}

/// Where the bytes of a [`Media`] are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaSource {
    /// A URL the provider fetches.
    Url(String),
    /// The bytes, base64-encoded (standard alphabet, no `data:` prefix).
    Base64(String),
}

impl Media {
    /// Media by URL.
    pub fn url(url: impl Into<String>) -> Media {
        Media {
            source: MediaSource::Url(url.into()),
            media_type: None,
            detail: None,
            filename: None,
        }
    }

    /// Inline media: base64 `data` of `media_type`.
    pub fn base64(media_type: impl Into<String>, data: impl Into<String>) -> Media {
        Media {
            source: MediaSource::Base64(data.into()),
            media_type: Some(media_type.into()),
            detail: None,
            filename: None,
        }
    }

    /// Media from a URL as OpenAI takes it: a `data:<type>;base64,<data>` URL becomes inline
    /// data, any other URL stays a URL.
    ///
    /// ```
    /// use llm_providers::{Media, MediaSource};
    ///
    /// let inline = Media::from_url("data:image/png;base64,iVBORw0KGgo=");
    /// assert_eq!(inline.source, MediaSource::Base64("iVBORw0KGgo=".into()));
    /// assert_eq!(inline.media_type.as_deref(), Some("image/png"));
    /// let remote = Media::from_url("https://example.com/a.jpg");
    /// assert_eq!(remote.source, MediaSource::Url("https://example.com/a.jpg".into()));
    /// ```
    pub fn from_url(url: &str) -> Media {
        if let Some(rest) = url.strip_prefix("data:") {
            if let Some((header, data)) = rest.split_once(',') {
                if let Some(media_type) = header.strip_suffix(";base64") {
                    let media_type = (!media_type.is_empty()).then(|| media_type.to_owned());
                    return Media {
                        source: MediaSource::Base64(data.to_owned()),
                        media_type,
                        detail: None,
                        filename: None,
                    };
                }
            }
        }
        Media::url(url)
    }

    /// The media as a URL: the URL itself, or a `data:` URL of the inline bytes.
    pub fn to_url(&self) -> Cow<'_, str> {
        match &self.source {
            MediaSource::Url(url) => Cow::Borrowed(url),
            MediaSource::Base64(data) => Cow::Owned(format!(
                "data:{};base64,{data}",
                self.media_type
                    .as_deref()
                    .unwrap_or("application/octet-stream")
            )),
        }
    }

    /// Sets OpenAI's image `detail`.
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets the file name.
    #[must_use]
    pub fn filename(mut self, filename: impl Into<String>) -> Self {
        self.filename = Some(filename.into());
        self
    }
}

/// A tool the model may call.
///
/// ```
/// use llm_providers::Tool;
/// use serde_json::json;
///
/// let tool = Tool::new("get_weather")
///     .description("The weather in a city")
///     .parameters(json!({"type": "object", "properties": {"city": {"type": "string"}}}));
/// assert_eq!(tool.name, "get_weather");
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Tool {
    /// Its name (`[A-Za-z0-9_-]{1,64}` is what every provider takes).
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// Its arguments, as a JSON Schema object (none: no arguments).
    pub parameters: Option<Value>,
    /// Whether the arguments must follow the schema exactly (OpenAI and Anthropic `strict`).
    pub strict: Option<bool>,
}

impl Tool {
    /// A tool named `name` with no description and no arguments.
    pub fn new(name: impl Into<String>) -> Tool {
        Tool {
            name: name.into(),
            description: None,
            parameters: None,
            strict: None,
        }
    }

    /// Sets the description.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Sets the JSON Schema of the arguments.
    #[must_use]
    pub fn parameters(mut self, schema: Value) -> Self {
        self.parameters = Some(schema);
        self
    }

    /// Sets strict schema adherence.
    #[must_use]
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = Some(strict);
        self
    }
}

/// Whether and which tool the model must call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolChoice {
    /// The model decides (the default when tools are given).
    Auto,
    /// No tool call.
    None,
    /// Some tool must be called (Anthropic `any`, Gemini `ANY`).
    Required,
    /// This tool must be called.
    Tool(String),
}

/// A tool call the model made.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolCall {
    /// The call's id, echoed by its result. Providers that give none (Gemini 2.5) get one
    /// made up, starting with [`ToolCall::MADE_UP_PREFIX`].
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as the JSON text of an object (OpenAI's form; the other providers'
    /// objects are written out).
    pub arguments: String,
    /// Gemini's `thoughtSignature` on the call's part, to send back with it.
    pub signature: Option<String>,
}

impl ToolCall {
    /// Ids starting with this were made up here because the provider gave none; they are not
    /// sent back to it.
    pub const MADE_UP_PREFIX: &'static str = "call_llmtower_";

    /// A call of `name` with `arguments` (JSON text).
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
            signature: None,
        }
    }

    /// Sets Gemini's thought signature.
    #[must_use]
    pub fn signature(mut self, signature: impl Into<String>) -> Self {
        self.signature = Some(signature.into());
        self
    }

    /// An id for the answer's `index`th call, which the provider gave none: unique in this
    /// process and across restarts (a conversation outlives a gateway's restart), so that
    /// two turns' calls never share one.
    pub(crate) fn made_up_id(index: usize) -> String {
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};
        static START: OnceLock<u64> = OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let start = *START.get_or_init(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            // The low 32 bits of the start time in milliseconds: enough to tell restarts apart.
            now.map_or(0, |d| u64::from(d.as_millis() as u32))
        });
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("{}{start:x}{n:x}_{index}", Self::MADE_UP_PREFIX)
    }

    /// Whether the provider gave this id (rather than it being made up here).
    pub fn has_provider_id(&self) -> bool {
        !self.id.is_empty() && !self.id.starts_with(Self::MADE_UP_PREFIX)
    }

    /// The arguments as a JSON object (empty text reads as `{}`), or `None` when they are
    /// not one.
    pub fn arguments_object(&self) -> Option<serde_json::Map<String, Value>> {
        if self.arguments.trim().is_empty() {
            return Some(serde_json::Map::new());
        }
        match serde_json::from_str(&self.arguments) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        }
    }
}

/// A piece of streamed tool call: the first piece of a call has its id and name, later
/// pieces add argument text. Pieces of one call share an `index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolCallDelta {
    /// Which call of the answer (0, 1, …), across the whole answer.
    pub index: u32,
    /// The call's id (first piece).
    pub id: Option<String>,
    /// The tool's name (first piece).
    pub name: Option<String>,
    /// More argument text.
    pub arguments: String,
    /// Gemini's thought signature on the call.
    pub signature: Option<String>,
}

/// The output the model must produce.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ResponseFormat {
    /// Text (the default).
    Text,
    /// Some JSON object (OpenAI `json_object`, Gemini `responseMimeType`, Ollama `"json"`).
    JsonObject,
    /// JSON following a schema.
    JsonSchema {
        /// The schema's name (OpenAI requires one).
        name: String,
        /// What the output is.
        description: Option<String>,
        /// The JSON Schema.
        schema: Value,
        /// Whether the output must follow the schema exactly.
        strict: Option<bool>,
    },
}

impl ResponseFormat {
    /// Whether JSON is asked for.
    pub fn is_json(&self) -> bool {
        !matches!(self, ResponseFormat::Text)
    }
}

/// How hard the model should think (OpenAI's `reasoning_effort` levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReasoningEffort {
    /// No reasoning.
    None,
    /// Minimal.
    Minimal,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Extra high.
    XHigh,
    /// The most the model does.
    Max,
}

impl ReasoningEffort {
    /// OpenAI's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReasoningEffort::None => "none",
            ReasoningEffort::Minimal => "minimal",
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
            ReasoningEffort::XHigh => "xhigh",
            ReasoningEffort::Max => "max",
        }
    }

    /// The level OpenAI calls `name`.
    pub fn parse(name: &str) -> Option<ReasoningEffort> {
        Some(match name {
            "none" => ReasoningEffort::None,
            "minimal" => ReasoningEffort::Minimal,
            "low" => ReasoningEffort::Low,
            "medium" => ReasoningEffort::Medium,
            "high" => ReasoningEffort::High,
            "xhigh" => ReasoningEffort::XHigh,
            "max" => ReasoningEffort::Max,
            _ => return None,
        })
    }

    /// The share of the output budget a thinking budget gets at this level (OpenRouter's
    /// documented mapping: 0.95 / 0.8 / 0.5 / 0.2 / 0.1).
    pub(crate) fn budget_share(self) -> f64 {
        match self {
            ReasoningEffort::None => 0.0,
            ReasoningEffort::Minimal => 0.1,
            ReasoningEffort::Low => 0.2,
            ReasoningEffort::Medium => 0.5,
            ReasoningEffort::High => 0.8,
            ReasoningEffort::XHigh | ReasoningEffort::Max => 0.95,
        }
    }
}

/// How much the model should reason: a level, a token budget, or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReasoningConfig {
    /// The level (OpenAI `reasoning_effort`).
    pub effort: Option<ReasoningEffort>,
    /// A thinking budget in tokens (Anthropic `budget_tokens`, Gemini `thinkingBudget`).
    pub budget_tokens: Option<u32>,
}

impl ReasoningConfig {
    /// Reasoning at `effort`.
    pub fn effort(effort: ReasoningEffort) -> Self {
        ReasoningConfig {
            effort: Some(effort),
            budget_tokens: None,
        }
    }

    /// Reasoning within `tokens`.
    pub fn budget(tokens: u32) -> Self {
        ReasoningConfig {
            effort: None,
            budget_tokens: Some(tokens),
        }
    }
}

/// The reasoning a model showed, with what it needs to be sent back (Anthropic thinking
/// blocks with their signatures, redacted blocks, OpenRouter's reasoning details).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reasoning {
    /// The reasoning text (may be a summary, or empty when redacted).
    pub text: String,
    /// The provider's signature over it (Anthropic `signature`).
    pub signature: Option<String>,
    /// Encrypted reasoning (Anthropic `redacted_thinking.data`, OpenRouter
    /// `reasoning.encrypted`).
    pub redacted: Option<String>,
    /// Whose reasoning it is, in OpenRouter's `format` names (`anthropic-claude-v1`, …):
    /// signatures only go back to the provider that made them.
    pub format: Option<String>,
}

impl Reasoning {
    /// The format of Anthropic's thinking blocks.
    pub const ANTHROPIC: &'static str = "anthropic-claude-v1";

    /// Reasoning text without a signature.
    pub fn text(text: impl Into<String>) -> Reasoning {
        Reasoning {
            text: text.into(),
            ..Reasoning::default()
        }
    }

    /// An Anthropic thinking block.
    pub fn anthropic(text: impl Into<String>, signature: impl Into<String>) -> Reasoning {
        Reasoning {
            text: text.into(),
            signature: Some(signature.into()),
            redacted: None,
            format: Some(Self::ANTHROPIC.to_owned()),
        }
    }

    /// Whether this came from Anthropic (and may go back to it).
    pub fn is_anthropic(&self) -> bool {
        self.format.as_deref() == Some(Self::ANTHROPIC)
    }
}

/// A piece of streamed reasoning: text, then (Anthropic) the block's signature.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReasoningDelta {
    /// Which reasoning block of the answer (0, 1, …).
    pub index: u32,
    /// More reasoning text.
    pub text: String,
    /// The block's signature, when it arrives.
    pub signature: Option<String>,
    /// A redacted block, whole.
    pub redacted: Option<String>,
    /// Whose reasoning it is (see [`Reasoning::format`]).
    pub format: Option<String>,
}
