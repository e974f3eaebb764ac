//! Secrets that never print: [`Secret`] and [`MongoUri`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string. `Debug`, `Display` and `Serialize` all show `***`; read it with
/// [`Secret::expose`] at the one place that needs it (building a client).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

/// What secrets print as.
pub const REDACTED: &str = "***";

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself. Never log or format the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// A MongoDB connection string. It may embed a password, so it prints redacted:
/// `mongodb://user:***@host:27017/db?opts` (query strings are dropped from the printout too,
/// since they can carry credentials).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct MongoUri(Secret);

impl MongoUri {
    /// Wraps a connection string (validated by [`Config::validate`](super::Config::validate)).
    pub fn new(s: impl Into<String>) -> Self {
        Self(Secret::new(s))
    }

    /// The full connection string. Never log or format the result.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The scheme, user (password hidden), hosts and database path.
    pub fn redacted(&self) -> String {
        let raw = self.0.expose();
        let Some((scheme, rest)) = raw.split_once("://") else { return REDACTED.to_owned() };
        let rest = rest.split('?').next().unwrap_or_default();
        let rest = match rest.rsplit_once('@') {
            Some((user, hosts)) => {
                let user = user.split(':').next().unwrap_or_default();
                format!("{user}:{REDACTED}@{hosts}")
            }
            None => rest.to_owned(),
        };
        format!("{scheme}://{rest}")
    }

    /// Checks the string's shape (scheme, host) without contacting anything.
    pub fn check(&self) -> crate::Result<()> {
        match self.problem() {
            Some(m) => Err(crate::Error::invalid(crate::ErrorKind::Config, vec![crate::Problem::new("uri", m)])),
            None => Ok(()),
        }
    }

    /// Problems with the string's shape (scheme, host).
    pub(crate) fn problem(&self) -> Option<String> {
        let raw = self.0.expose();
        let Some(rest) = raw.strip_prefix("mongodb://").or_else(|| raw.strip_prefix("mongodb+srv://")) else {
            return Some("must start with mongodb:// or mongodb+srv://".into());
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if hosts.is_empty() || hosts.split(',').any(|h| h.is_empty() || h.starts_with(':')) {
            return Some("has no host".into());
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Some("must not contain whitespace or control characters".into());
        }
        None
    }
}

impl fmt::Debug for MongoUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MongoUri({})", self.redacted())
    }
}

impl fmt::Display for MongoUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for MongoUri {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?} {}", serde_json::to_string(&s).unwrap()), "*** *** \"***\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn mongo_uri_hides_password_and_query() {
        let u = MongoUri::new("mongodb://app:pw@h1:27017,h2/db?authSource=admin&password=x");
        let shown = format!("{u} {u:?}");
        assert!(!shown.contains("pw") && !shown.contains("password"), "{shown}");
        assert_eq!(u.redacted(), "mongodb://app:***@h1:27017,h2/db");
        assert_eq!(MongoUri::new("mongodb://h:1").redacted(), "mongodb://h:1");
        assert_eq!(MongoUri::new("nonsense").redacted(), "***");
    }

    #[test]
    fn mongo_uri_shape() {
        assert!(MongoUri::new("mongodb://127.0.0.1:27017").problem().is_none());
        assert!(MongoUri::new("mongodb+srv://u:p@cluster.example/db").problem().is_none());
        assert!(MongoUri::new("http://x").problem().is_some());
        assert!(MongoUri::new("mongodb://").problem().is_some());
        assert!(MongoUri::new("mongodb://u:p@/db").problem().is_some());
        assert!(MongoUri::new("mongodb://h ost").problem().is_some());
    }
}
