//! Breaker state shared through Redis (feature `redis`): a trip or a recovery decided by
//! one instance is published, and every instance with a breaker of the same name takes it on
//! — including one started during the outage, which reads the shared record when its
//! breaker is created.
//!
//! The fast path does not change: admitting and recording a call never touch Redis. Only
//! transitions do, from a background task: a trip (closed or half-open → open) writes the
//! record and publishes it in one script; a recovery (half-open → closed) does the same
//! unless a newer record exists, in which case the newer one is taken on instead — the
//! probe that saw the target fail wins over one that saw it work. Messages can be lost (a
//! subscription drops, Redis restarts), so the task also re-reads every record it follows
//! each `resync_every`. Records carry an epoch (the server's clock in microseconds, always
//! increasing), and a breaker only takes on a record newer than the last it knew.
//!
//! While Redis is unreachable each instance decides alone (the breaker works as without the
//! feature); the outage is logged once, and trips made meanwhile are published when Redis
//! answers again, if the breaker is still open by then.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use llm_core::__private::{RedisLink, integers};
use llm_core::{ConfigError, RedisConfig};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::state::{CircuitBreaker, PeerState, Peers, State, StateChange};

/// The key prefix of breakers whose [`RedisConfig`] names none.
const DEFAULT_PREFIX: &str = "llm-tower:breaker:";

/// How long a record outlives its open duration: a late instance still sees that the target
/// was failing (and probes before sending everything), and idle records expire.
const LINGER_MS: u64 = 10 * 60 * 1000;

/// Reads records, or writes one and publishes it, on the server's clock.
///
/// A record is a hash: `state` (1 open, 0 closed), `until` (ms), `trips`, `epoch` (µs of
/// the server's clock, at least one more than the record's previous epoch). `read` answers
/// `{epoch, state, remaining_ms, trips}` per key; `open` and `close` answer the record
/// written — or, for a `close` when a newer record than the caller knew exists, that one.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function read(k)
  local r = redis.call('HMGET', k, 'state', 'until', 'trips', 'epoch')
  local state = tonumber(r[1]) or 0
  local remaining = 0
  if state == 1 then remaining = math.max(0, (tonumber(r[2]) or 0) - now_ms) end
  return {tonumber(r[4]) or 0, state, remaining, tonumber(r[3]) or 0}
end
local op = ARGV[1]
if op == 'read' then
  local out = {}
  for _, k in ipairs(KEYS) do
    for _, v in ipairs(read(k)) do out[#out + 1] = v end
  end
  return out
end
local open_for, trips, known, linger = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local current = read(KEYS[1])
if op == 'close' and current[1] > known then return current end
local epoch = string.format('%.0f', math.max(current[1] + 1, now_us))
local state = 0
if op == 'open' then state = 1 else open_for = 0; trips = 0 end
redis.call('HSET', KEYS[1], 'state', state, 'until', string.format('%.0f', now_ms + open_for), 'trips', trips, 'epoch', epoch)
redis.call('PEXPIRE', KEYS[1], open_for + linger)
redis.call('PUBLISH', ARGV[6], epoch .. ' ' .. state .. ' ' .. open_for .. ' ' .. trips .. ' ' .. ARGV[7])
return {tonumber(epoch), state, open_for, trips}
";

/// Records read per round trip when resynchronising.
const READ_BATCH: usize = 256;

enum Command {
    /// Follow this breaker's record, starting with its current value.
    Follow(Weak<CircuitBreaker>),
    /// Publish a transition this instance decided.
    Publish { name: Arc<str>, open: Option<u32> },
}

/// The breakers' side of the shared state: hands transitions and new breakers to the
/// background task. Dropping the last one ends the task.
pub(crate) struct SharedLink {
    commands: mpsc::UnboundedSender<Command>,
    link: Arc<RedisLink>,
}

impl SharedLink {
    /// Starts the background task on the current Tokio runtime. Errors name the field of
    /// `config` at fault, or `shared` itself outside a runtime.
    pub(crate) fn start(config: &RedisConfig) -> Result<SharedLink, ConfigError> {
        config.validate().map_err(|err| err.in_section("shared"))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::new(
                "shared",
                "a shared breaker keeps a background task: build it inside a Tokio runtime",
            )
        })?;
        let prefix = config.prefix_or(DEFAULT_PREFIX).to_owned();
        let link = Arc::new(config.link(
            format!("breaker state {prefix}"),
            "each instance's breaker decides alone",
        )?);
        let (commands, receiver) = mpsc::unbounded_channel();
        let task = Task {
            link: link.clone(),
            script: redis::Script::new(SCRIPT),
            channel: format!("{prefix}changes"),
            prefix,
            resync_every: config.resync_every,
            followed: HashMap::new(),
            pending: HashMap::new(),
        };
        runtime.spawn(task.run(receiver));
        Ok(SharedLink { commands, link })
    }
}

impl Peers for SharedLink {
    fn follow(&self, breaker: &Arc<CircuitBreaker>) {
        let _ = self.commands.send(Command::Follow(Arc::downgrade(breaker)));
    }

    fn publish(&self, name: &Arc<str>, change: &StateChange, trips: u32) {
        let open = match (change.from, change.to) {
            (_, State::Open) => Some(trips),
            (State::HalfOpen, State::Closed) => None,
            _ => return,
        };
        let _ = self.commands.send(Command::Publish {
            name: name.clone(),
            open,
        });
    }

    fn is_down(&self) -> bool {
        self.link.is_down()
    }
}

/// One followed record.
struct Followed {
    breaker: Weak<CircuitBreaker>,
    /// The newest epoch taken on or written.
    epoch: i64,
}

/// A record as the script answers it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Record {
    epoch: i64,
    state: PeerState,
}

impl Record {
    fn from_fields(fields: &[i64]) -> Option<Record> {
        let &[epoch, state, remaining, trips] = fields else {
            return None;
        };
        let state = match state {
            1 => PeerState::Open {
                retry_in: Duration::from_millis(remaining.max(0) as u64),
                trips: u32::try_from(trips).unwrap_or(u32::MAX),
            },
            _ => PeerState::Closed,
        };
        Some(Record { epoch, state })
    }

    /// A published message: `epoch state open_for_ms trips name`.
    fn from_message(payload: &str) -> Option<(Record, &str)> {
        let mut parts = payload.splitn(5, ' ');
        let mut number = || parts.next()?.parse::<i64>().ok();
        let fields = [number()?, number()?, number()?, number()?];
        let name = parts.next()?;
        Some((Record::from_fields(&fields)?, name))
    }
}

struct Task {
    link: Arc<RedisLink>,
    script: redis::Script,
    prefix: String,
    channel: String,
    resync_every: Duration,
    followed: HashMap<Arc<str>, Followed>,
    /// Transitions not yet published (Redis was down): the latest per breaker.
    pending: HashMap<Arc<str>, Option<u32>>,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut resync = tokio::time::interval(self.resync_every);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut messages: Option<redis::aio::PubSubStream> = None;
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Follow(breaker)) => self.follow(breaker).await,
                    Some(Command::Publish { name, open }) => {
                        self.pending.insert(name.clone(), open);
                        self.publish(name).await;
                    }
                },
                message = next_message(&mut messages) => match message {
                    Some(message) => {
                        if let Ok(payload) = message.get_payload::<String>() {
                            if let Some((record, name)) = Record::from_message(&payload) {
                                self.take_on(name, record);
                            }
                        }
                    }
                    // The subscription dropped: resubscribe at the next tick.
                    None => messages = None,
                },
                _ = resync.tick() => {
                    if messages.is_none() {
                        messages = self.subscribe().await;
                    }
                    let names: Vec<Arc<str>> = self.pending.keys().cloned().collect();
                    for name in names {
                        self.publish(name).await;
                    }
                    self.resync().await;
                }
            }
        }
    }

    async fn subscribe(&self) -> Option<redis::aio::PubSubStream> {
        let client = self.link.client().clone();
        let channel = self.channel.clone();
        let subscribe = async move {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        };
        match tokio::time::timeout(self.link.timeout(), subscribe).await {
            Ok(Ok(messages)) => Some(messages),
            Ok(Err(err)) => {
                self.link.failed(err.to_string());
                None
            }
            Err(_) => {
                self.link
                    .failed(format!("no subscription within {:?}", self.link.timeout()));
                None
            }
        }
    }

    async fn follow(&mut self, breaker: Weak<CircuitBreaker>) {
        let Some(name) = breaker
            .upgrade()
            .and_then(|breaker| breaker.name().map(Arc::<str>::from))
        else {
            return;
        };
        self.followed
            .insert(name.clone(), Followed { breaker, epoch: 0 });
        self.read(&[name]).await;
    }

    /// Re-reads every followed record, forgetting breakers that are gone.
    async fn resync(&mut self) {
        self.followed
            .retain(|_, followed| followed.breaker.strong_count() > 0);
        let names: Vec<Arc<str>> = self.followed.keys().cloned().collect();
        for batch in names.chunks(READ_BATCH) {
            if !self.read(batch).await {
                return;
            }
        }
    }

    /// Reads the records of `names` and takes on the newer ones; false if Redis failed.
    async fn read(&mut self, names: &[Arc<str>]) -> bool {
        let script = &self.script;
        let keys: Vec<String> = names
            .iter()
            .map(|name| format!("{}{name}", self.prefix))
            .collect();
        let reply = self
            .link
            .run(|mut connection| async move {
                let mut invocation = script.prepare_invoke();
                invocation.arg("read");
                for key in keys {
                    invocation.key(key);
                }
                invocation
                    .invoke_async::<redis::Value>(&mut connection)
                    .await
            })
            .await;
        let Ok(reply) = reply else {
            return false;
        };
        let fields = integers(&reply);
        for (name, fields) in names.iter().zip(fields.chunks(4)) {
            if let Some(record) = Record::from_fields(fields) {
                self.take_on(name, record);
            }
        }
        true
    }

    /// Writes and publishes the pending transition of `name`, if it still holds.
    async fn publish(&mut self, name: Arc<str>) {
        let Some(&open) = self.pending.get(&name) else {
            return;
        };
        let Some(followed) = self.followed.get(&name) else {
            self.pending.remove(&name);
            return;
        };
        let Some(breaker) = followed.breaker.upgrade() else {
            self.pending.remove(&name);
            return;
        };
        let known = followed.epoch;
        let (op, open_for, trips) = match open {
            Some(trips) => {
                // Published late (Redis was down), a trip shares what is left of it; one
                // whose open time has passed locally is stale and is not published.
                match breaker.open_for_now(Instant::now()) {
                    Some(left) if !left.is_zero() => ("open", left.as_millis() as u64, trips),
                    _ => {
                        self.pending.remove(&name);
                        return;
                    }
                }
            }
            None => ("close", 0, 0),
        };
        let script = &self.script;
        let key = format!("{}{name}", self.prefix);
        let channel = &self.channel;
        let member = name.clone();
        let reply = self
            .link
            .run(|mut connection| async move {
                script
                    .key(key)
                    .arg(op)
                    .arg(open_for)
                    .arg(trips)
                    .arg(known)
                    .arg(LINGER_MS)
                    .arg(channel)
                    .arg(&*member)
                    .invoke_async::<redis::Value>(&mut connection)
                    .await
            })
            .await;
        let Ok(reply) = reply else {
            // Kept pending: tried again at the next resync.
            return;
        };
        self.pending.remove(&name);
        // The record written (taking it on changes nothing), or, for a recovery refused by
        // a newer record, that record.
        if let Some(record) = Record::from_fields(&integers(&reply)) {
            self.take_on(&name, record);
        }
    }

    /// Takes on `record` for `name` if it is newer than what the breaker knew.
    fn take_on(&mut self, name: &str, record: Record) {
        let Some(followed) = self.followed.get_mut(name) else {
            return;
        };
        if record.epoch <= followed.epoch {
            return;
        }
        followed.epoch = record.epoch;
        if let Some(breaker) = followed.breaker.upgrade() {
            breaker.adopt(record.state, Instant::now());
        }
    }
}

async fn next_message(messages: &mut Option<redis::aio::PubSubStream>) -> Option<redis::Msg> {
    match messages {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_back() {
        let (record, name) = Record::from_message("1700000000000001 1 30000 2 openai gpt-4o")
            .expect("a valid message");
        assert_eq!(name, "openai gpt-4o");
        assert_eq!(record.epoch, 1_700_000_000_000_001);
        assert_eq!(
            record.state,
            PeerState::Open {
                retry_in: Duration::from_secs(30),
                trips: 2
            }
        );
        assert_eq!(
            Record::from_message("5 0 0 0 x").map(|(r, _)| r.state),
            Some(PeerState::Closed)
        );
        assert!(Record::from_message("5 zero 0 0 x").is_none());
        assert!(Record::from_message("5 0 0 0").is_none());
    }
}
