//! Time, ids and randomness come in through these ports, so udm-core stays deterministic.

use std::fmt;

use crate::id::{ObjectId, RequestId, encode_ulid};
use crate::time::Timestamp;

/// The source of time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The source of randomness (jitter, id entropy).
pub trait Entropy: Send + Sync + fmt::Debug {
    /// A uniformly random 64-bit sample.
    fn next_u64(&self) -> u64;
}

/// The source of generated ids.
pub trait IdGenerator: Send + Sync + fmt::Debug {
    /// A new, unique object id.
    fn object_id(&self) -> ObjectId;
    /// A new, unique request id.
    fn request_id(&self) -> RequestId;
}

/// Time-ordered ULIDs from a clock and an entropy source.
#[derive(Debug)]
pub struct UlidGenerator<C, E> {
    clock: C,
    entropy: E,
}

impl<C: Clock, E: Entropy> UlidGenerator<C, E> {
    /// Generator over the given ports.
    pub fn new(clock: C, entropy: E) -> Self {
        Self { clock, entropy }
    }

    fn next(&self) -> String {
        let millis = u64::try_from(self.clock.now().as_millis()).unwrap_or(0);
        let random = (u128::from(self.entropy.next_u64()) << 64) | u128::from(self.entropy.next_u64());
        encode_ulid(millis, random)
    }
}

impl<C: Clock, E: Entropy> IdGenerator for UlidGenerator<C, E> {
    fn object_id(&self) -> ObjectId {
        // A ULID is 26 Crockford characters: always a valid id.
        ObjectId::new(self.next()).unwrap_or_else(|_| unreachable!("ULIDs are valid ids"))
    }

    fn request_id(&self) -> RequestId {
        RequestId::new(self.next()).unwrap_or_else(|_| unreachable!("ULIDs are valid ids"))
    }
}

impl<T: Clock + ?Sized> Clock for std::sync::Arc<T> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

impl<T: Entropy + ?Sized> Entropy for std::sync::Arc<T> {
    fn next_u64(&self) -> u64 {
        (**self).next_u64()
    }
}
