//! Where a limiter keeps its state, as its builder chooses it: [`InProcess`] (the default),
//! [`InProcessKeyed`], [`Redis`] (feature `redis`), or a [`Custom`] store.

use std::hash::Hash;
use std::marker::PhantomData;

use llm_core::ConfigError;

use crate::clock::{Clock, TokioClock};
use crate::config::RateLimitConfig;
use crate::store::{KeyedLocalStore, LocalStore};

mod sealed {
    pub trait Sealed {}
}

/// A store kind a [`RateLimitLayerBuilder`](crate::RateLimitLayerBuilder) can build: what
/// its `build` makes the state live in.
pub trait StoreSpec: sealed::Sealed {
    /// The store built.
    type Store;
    #[doc(hidden)]
    fn make(self, config: &RateLimitConfig) -> Result<Self::Store, ConfigError>;
}

/// A store kind that can keep one limit per key of type `K`.
pub trait KeyedBy<K>: sealed::Sealed {
    /// The keyed store kind.
    type Keyed;
    #[doc(hidden)]
    fn keyed(self) -> Self::Keyed;
}

/// One limit in this process, reading the time from `Clk`: the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct InProcess<Clk = TokioClock>(pub(crate) Clk);

/// One limit per key in this process, with bounded memory.
#[derive(Debug)]
pub struct InProcessKeyed<K>(PhantomData<fn() -> K>);

/// A store of your own.
#[derive(Debug)]
pub struct Custom<St>(pub(crate) St);

impl<Clk> sealed::Sealed for InProcess<Clk> {}
impl<K> sealed::Sealed for InProcessKeyed<K> {}
impl<St> sealed::Sealed for Custom<St> {}

impl<Clk: Clock> StoreSpec for InProcess<Clk> {
    type Store = LocalStore<Clk>;
    fn make(self, config: &RateLimitConfig) -> Result<LocalStore<Clk>, ConfigError> {
        Ok(LocalStore::new(config.limits()?, self.0))
    }
}

impl<K: Hash + Eq + Clone> StoreSpec for InProcessKeyed<K> {
    type Store = KeyedLocalStore<K>;
    fn make(self, config: &RateLimitConfig) -> Result<Self::Store, ConfigError> {
        let limits = config.limits()?;
        Ok(KeyedLocalStore::new(
            limits,
            config.max_keys,
            config.idle_after,
        ))
    }
}

impl<St> StoreSpec for Custom<St> {
    type Store = St;
    fn make(self, _: &RateLimitConfig) -> Result<St, ConfigError> {
        Ok(self.0)
    }
}

impl<K> KeyedBy<K> for InProcess {
    type Keyed = InProcessKeyed<K>;
    fn keyed(self) -> InProcessKeyed<K> {
        InProcessKeyed(PhantomData)
    }
}

/// A store of your own handles the keys itself.
impl<K, St> KeyedBy<K> for Custom<St> {
    type Keyed = Custom<St>;
    fn keyed(self) -> Custom<St> {
        self
    }
}

#[cfg(feature = "redis")]
pub use shared::{Redis, ThroughRedis};

#[cfg(feature = "redis")]
mod shared {
    use std::marker::PhantomData;

    use llm_core::{ConfigError, RedisConfig};

    use super::{InProcess, InProcessKeyed, KeyedBy, StoreSpec, sealed};
    use crate::config::RateLimitConfig;
    use crate::redis::RedisStore;

    /// The state in Redis, shared by every instance, one limit per key of type `K` (`()`:
    /// one limit).
    #[derive(Debug)]
    pub struct Redis<K = ()> {
        config: RedisConfig,
        key: PhantomData<fn() -> K>,
    }

    impl<K> sealed::Sealed for Redis<K> {}

    impl<K> StoreSpec for Redis<K> {
        type Store = RedisStore<K>;
        fn make(self, config: &RateLimitConfig) -> Result<RedisStore<K>, ConfigError> {
            RedisStore::new(&self.config, config.limits()?, config.on_redis_failure)
                .map_err(|e| e.in_section("redis"))
        }
    }

    impl<K> KeyedBy<K> for Redis {
        type Keyed = Redis<K>;
        fn keyed(self) -> Redis<K> {
            Redis {
                config: self.config,
                key: PhantomData,
            }
        }
    }

    /// A store kind whose state can move to Redis.
    pub trait ThroughRedis: sealed::Sealed {
        /// The same kind, in Redis.
        type Shared;
        #[doc(hidden)]
        fn through(self, config: RedisConfig) -> Self::Shared;
    }

    impl ThroughRedis for InProcess {
        type Shared = Redis;
        fn through(self, config: RedisConfig) -> Redis {
            Redis {
                config,
                key: PhantomData,
            }
        }
    }

    impl<K> ThroughRedis for InProcessKeyed<K> {
        type Shared = Redis<K>;
        fn through(self, config: RedisConfig) -> Redis<K> {
            Redis {
                config,
                key: PhantomData,
            }
        }
    }
}
