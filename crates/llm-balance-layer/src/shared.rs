//! Member state shared through Redis (feature `redis`): a member one instance found out —
//! retired for a refused key, cooling down after a 429 or an exhausted quota — is out for
//! every instance of the pool, including one started later.
//!
//! The pick never touches Redis. A member going out is written from a background task (one
//! script: the later of the two times out wins), and the task reads the pool's record each
//! `resync_every`, taking on what other instances found. A member an operator restores is
//! removed from the record. Records are on the server's clock; a pool's record expires a
//! minute after its last member is back.
//!
//! While Redis is unreachable each instance decides alone (the pool works as without the
//! feature); the outage is logged once by the link.

use std::sync::{Arc, Weak};
use std::time::Duration;

use llm_core::__private::{RedisLink, integers};
use llm_core::{ConfigError, ErrorKind, RedisConfig};
use tokio::sync::mpsc;

use crate::health::kind_code;

/// What the task follows: a pool's members, by name.
pub(crate) trait Members: Send + Sync + 'static {
    /// The members' names, in the pool's order.
    fn names(&self) -> Vec<Arc<str>>;
    /// Member `member` is out for `left`, for the kind coded `code`, by another instance.
    fn take_on(&self, member: usize, code: u8, left: Duration);
}

/// The key prefix of pools whose [`RedisConfig`] names none.
const DEFAULT_PREFIX: &str = "llm-tower:pool:";

/// A pool's record is a hash of member name → `until_ms kind` (server clock). `read` answers
/// `{remaining_ms, kind}` for each member named; `out` writes a member's time out unless a
/// later one is recorded; `back` removes a member.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
if op == 'read' then
  local out = {}
  for i = 2, #ARGV do
    local v = redis.call('HGET', KEYS[1], ARGV[i])
    local left, kind = 0, 0
    if v then
      local u, k = string.match(v, '^(%d+) (%d+)$')
      left = math.max(0, (tonumber(u) or 0) - now)
      kind = tonumber(k) or 0
    end
    out[#out + 1] = left
    out[#out + 1] = kind
  end
  return out
end
if op == 'back' then
  redis.call('HDEL', KEYS[1], ARGV[2])
  return 1
end
local for_ms, kind = tonumber(ARGV[3]), ARGV[4]
local until_ms = now + for_ms
local v = redis.call('HGET', KEYS[1], ARGV[2])
local current = v and tonumber(string.match(v, '^(%d+)')) or 0
if until_ms > current then
  redis.call('HSET', KEYS[1], ARGV[2], string.format('%.0f', until_ms) .. ' ' .. kind)
end
if redis.call('PTTL', KEYS[1]) < for_ms + 60000 then
  redis.call('PEXPIRE', KEYS[1], for_ms + 60000)
end
return 1
";

enum Command {
    Out {
        member: Arc<str>,
        duration: Duration,
        kind: ErrorKind,
    },
    Back {
        member: Arc<str>,
    },
}

/// The pool's side: hands members going out or back to the background task. Dropping it
/// (with the pool) ends the task.
pub(crate) struct SharedLink {
    commands: mpsc::UnboundedSender<Command>,
}

/// The background task, before it is given the pool it follows.
pub(crate) struct Task {
    link: RedisLink,
    script: redis::Script,
    key: String,
    resync_every: Duration,
    commands: mpsc::UnboundedReceiver<Command>,
}

impl SharedLink {
    /// The link of pool `name` and its task, to start once the pool exists. Errors name the
    /// field of `config` at fault, or `shared` itself outside a runtime.
    pub(crate) fn new(config: &RedisConfig, name: &str) -> Result<(SharedLink, Task), ConfigError> {
        config.validate().map_err(|err| err.in_section("shared"))?;
        tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::new(
                "shared",
                "a shared pool keeps a background task: build it inside a Tokio runtime",
            )
        })?;
        let prefix = config.prefix_or(DEFAULT_PREFIX);
        let link = config.link(
            format!("pool state {prefix}{name}"),
            "each instance's pool decides alone",
        )?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let task = Task {
            link,
            script: redis::Script::new(SCRIPT),
            key: format!("{prefix}{name}"),
            resync_every: config.resync_every,
            commands: receiver,
        };
        Ok((SharedLink { commands }, task))
    }

    pub(crate) fn out(&self, member: &Arc<str>, duration: Duration, kind: ErrorKind) {
        let _ = self.commands.send(Command::Out {
            member: member.clone(),
            duration,
            kind,
        });
    }

    pub(crate) fn back(&self, member: &Arc<str>) {
        let _ = self.commands.send(Command::Back {
            member: member.clone(),
        });
    }
}

impl Task {
    /// Runs on the current runtime, following `pool`.
    pub(crate) fn start<P: Members>(self, pool: Weak<P>) {
        tokio::spawn(self.run(pool));
    }

    async fn run<P: Members>(mut self, pool: Weak<P>) {
        let mut resync = tokio::time::interval(self.resync_every);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => return,
                    Some(command) => self.write(command).await,
                },
                _ = resync.tick() => {
                    let Some(pool) = pool.upgrade() else { return };
                    self.read(&*pool).await;
                }
            }
        }
    }

    async fn write(&self, command: Command) {
        let (key, script) = (self.key.clone(), &self.script);
        let _ = self
            .link
            .run(|mut connection| async move {
                let mut invocation = script.prepare_invoke();
                invocation.key(key);
                match command {
                    Command::Out {
                        member,
                        duration,
                        kind,
                    } => invocation
                        .arg("out")
                        .arg(&*member)
                        .arg(duration.as_millis().min(u128::from(u64::MAX)) as u64)
                        .arg(kind_code(kind)),
                    Command::Back { member } => invocation.arg("back").arg(&*member),
                };
                invocation
                    .invoke_async::<redis::Value>(&mut connection)
                    .await
            })
            .await;
    }

    /// Takes on the members other instances found out.
    async fn read<P: Members>(&self, pool: &P) {
        let (key, script) = (self.key.clone(), &self.script);
        let names = pool.names();
        let reply = self
            .link
            .run(|mut connection| async move {
                let mut invocation = script.prepare_invoke();
                invocation.key(key).arg("read");
                for name in &names {
                    invocation.arg(&**name);
                }
                invocation
                    .invoke_async::<redis::Value>(&mut connection)
                    .await
            })
            .await;
        let Ok(reply) = reply else { return };
        let fields = integers(&reply);
        for (member, fields) in fields.chunks(2).enumerate() {
            if let &[left, kind] = fields {
                if left > 0 {
                    let code = u8::try_from(kind).unwrap_or(0);
                    pool.take_on(member, code, Duration::from_millis(left as u64));
                }
            }
        }
    }
}
