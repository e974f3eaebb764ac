//! Identifiers: route contexts, object ids, request ids, and time-ordered id encoding.
//!
//! Identifiers become parts of MongoDB names and S3 keys, so validation is the first line
//! of defence against path traversal and name injection. An accepted identifier:
//! - is 1..=`max` bytes long (64 for context parts, 128 by default for object and request ids);
//! - contains only ASCII letters, digits, `_`, `-` and `.`;
//! - does not start with `.` or `-` and does not contain `..`.
//!
//! So no accepted identifier contains `/`, `\`, `$`, NUL, control characters or whitespace,
//! and none can be `.` or `..`: every key built from accepted identifiers stays under its
//! tenant's prefix (property-tested in `tests/ids.rs`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest tenant, db or collection name, in bytes.
pub const MAX_CONTEXT_PART_BYTES: usize = 64;
/// Longest identifier accepted when reading stored records (ids may have been written under
/// a larger configured limit than today's).
pub const MAX_STORED_ID_BYTES: usize = 1024;
/// Default longest object or request id, in bytes (configurable via `limits.max_id_bytes`).
pub const DEFAULT_MAX_ID_BYTES: usize = 128;

/// Checks `value` against the identifier rules; `what` names it in the error.
pub fn check_ident(what: &str, value: &str, max: usize) -> Result<()> {
    let problem = if value.is_empty() {
        Some("must not be empty".to_owned())
    } else if value.len() > max {
        Some(format!("is {} bytes, at most {max} allowed", value.len()))
    } else if let Some(c) = value.chars().find(|c| !is_ident_char(*c)) {
        Some(format!("contains {c:?}; only ASCII letters, digits, '_', '-' and '.' are allowed"))
    } else if value.starts_with('.') || value.starts_with('-') {
        Some("must not start with '.' or '-'".to_owned())
    } else if value.contains("..") {
        Some("must not contain '..'".to_owned())
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::validation(what, p)),
        None => Ok(()),
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

macro_rules! ident_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value` (default length limit).
            pub fn new(value: impl Into<String>) -> Result<Self> {
                Self::with_max(value, $max)
            }

            /// Validates and wraps `value` with an explicit length limit in bytes.
            pub fn with_max(value: impl Into<String>, max: usize) -> Result<Self> {
                let value = value.into();
                check_ident($what, &value, max)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                // Stored ids may have been written under a larger configured limit.
                Self::with_max(s, MAX_STORED_ID_BYTES).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }
    };
}

ident_type!(
    /// A tenant, database or collection name (validated; at most 64 bytes).
    Name, "name", MAX_CONTEXT_PART_BYTES
);
ident_type!(
    /// An object id, caller-supplied or generated (validated; 128 bytes by default).
    ObjectId, "object id", DEFAULT_MAX_ID_BYTES
);
ident_type!(
    /// The idempotency key of a write (validated; 128 bytes by default).
    RequestId, "request id", DEFAULT_MAX_ID_BYTES
);

/// Where a document lives: tenant, database and collection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RouteContext {
    /// The tenant: the outermost isolation boundary (its own key prefix).
    pub tenant: Name,
    /// The logical database inside the tenant.
    pub db: Name,
    /// The collection inside the database.
    pub collection: Name,
}

impl RouteContext {
    /// Validates the three parts; every problem is reported at once.
    pub fn new(tenant: &str, db: &str, collection: &str) -> Result<Self> {
        let parts = [("tenant", tenant), ("db", db), ("collection", collection)];
        let problems: Vec<_> = parts
            .iter()
            .filter_map(|(what, v)| check_ident(what, v, MAX_CONTEXT_PART_BYTES).err())
            .flat_map(|e| e.problems().to_vec())
            .collect();
        if !problems.is_empty() {
            return Err(Error::invalid(crate::ErrorKind::Validation, problems));
        }
        Ok(Self { tenant: Name(tenant.to_owned()), db: Name(db.to_owned()), collection: Name(collection.to_owned()) })
    }
}

impl fmt::Display for RouteContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.db, self.collection)
    }
}

/// One object: its context plus its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    /// Where the object lives.
    pub ctx: RouteContext,
    /// The object's id.
    pub id: ObjectId,
}

impl ObjectKey {
    /// Pairs a context with an id.
    pub fn new(ctx: RouteContext, id: ObjectId) -> Self {
        Self { ctx, id }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ctx, self.id)
    }
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Encodes a ULID (26 Crockford base-32 characters): 48 bits of milliseconds then 80 random
/// bits. Ids from later milliseconds sort after earlier ones. Time and randomness are given by
/// the caller (the id-generator port), so this stays pure.
pub fn encode_ulid(unix_millis: u64, random: u128) -> String {
    let value: u128 = (u128::from(unix_millis & 0xFFFF_FFFF_FFFF) << 80) | (random & ((1 << 80) - 1));
    (0..26)
        .map(|i| {
            let shift = 5 * (25 - i);
            char::from(CROCKFORD[((value >> shift) & 0x1F) as usize])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_traversal_and_injection() {
        for bad in ["", "a/b", "..", "a..b", ".hidden", "-flag", "$where", "a\0b", "a b", "é", "a\\b"] {
            assert!(ObjectId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ObjectId::new("x".repeat(129)).is_err());
        assert!(ObjectId::new("x".repeat(128)).is_ok());
        assert!(ObjectId::new("user-1.v2_A").is_ok());
    }

    #[test]
    fn context_reports_every_bad_part() {
        let e = RouteContext::new("a/b", "ok", "$x").unwrap_err();
        let paths: Vec<_> = e.problems().iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["tenant", "collection"]);
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<ObjectId>("\"../etc\"").is_err());
        assert_eq!(serde_json::from_str::<ObjectId>("\"a1\"").unwrap().as_str(), "a1");
    }

    #[test]
    fn ulid_is_26_chars_and_time_ordered() {
        let a = encode_ulid(1_000, u128::MAX);
        let b = encode_ulid(1_001, 0);
        assert_eq!(a.len(), 26);
        assert!(a < b);
        assert_eq!(encode_ulid(0, 0), "0".repeat(26));
        assert!(ObjectId::new(a).is_ok());
    }
}
