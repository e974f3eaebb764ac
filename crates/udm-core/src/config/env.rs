//! Environment overrides for configuration.
//!
//! `UDM__ROUTING__KEY_TEMPLATE={tenant}:{id}` sets `routing.key_template`;
//! `UDM__BACKENDS__0__META__URI=…` sets `backends[0].meta.uri` (array indexes are numbers;
//! an index one past the end appends). Segments are lower-cased. Values that parse as JSON
//! numbers, booleans, `null`, arrays or objects take that type; anything else is a string
//! (write `"123"` with the quotes to force a numeric-looking string). The caller passes the
//! variables in, so this stays pure.

use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind, Problem, Result};

/// Applies every `PREFIX__A__B=value` pair in `vars` to `base`; other variables are ignored.
/// All malformed overrides are reported together.
pub fn apply_env(mut base: Value, prefix: &str, vars: impl IntoIterator<Item = (String, String)>) -> Result<Value> {
    let lead = format!("{prefix}__");
    let mut vars: Vec<_> = vars.into_iter().filter(|(k, _)| k.starts_with(&lead)).collect();
    vars.sort(); // deterministic, and array index 0 is applied before 1
    let mut problems = Vec::new();
    for (key, raw) in vars {
        let path: Vec<String> = key[lead.len()..].split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            problems.push(Problem::new(key, "empty path segment"));
            continue;
        }
        if let Err(m) = set(&mut base, &path, parse_value(&raw)) {
            problems.push(Problem::new(key, m));
        }
    }
    if problems.is_empty() { Ok(base) } else { Err(Error::invalid(ErrorKind::Config, problems)) }
}

fn parse_value(raw: &str) -> Value {
    let t = raw.trim();
    let jsonish = matches!(t, "true" | "false" | "null")
        || t.starts_with(['[', '{', '"', '-'])
        || t.starts_with(|c: char| c.is_ascii_digit());
    if jsonish && let Ok(v) = serde_json::from_str(t) {
        return v;
    }
    Value::String(raw.to_owned())
}

fn set(node: &mut Value, path: &[String], value: Value) -> std::result::Result<(), String> {
    let Some((head, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    if node.is_null() {
        *node = if head.parse::<usize>().is_ok() { Value::Array(vec![]) } else { Value::Object(Map::new()) };
    }
    match node {
        Value::Object(m) => set(m.entry(head.clone()).or_insert(Value::Null), rest, value),
        Value::Array(a) => {
            let i: usize = head.parse().map_err(|_| format!("{head:?} is not an array index"))?;
            if i == a.len() {
                a.push(Value::Null);
            }
            let len = a.len();
            let slot = a.get_mut(i).ok_or_else(|| format!("index {i} is past the end ({len} items)"))?;
            set(slot, rest, value)
        }
        _ => Err(format!("cannot set {head:?} inside a scalar")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn overrides_nested_paths_and_arrays() {
        let base = json!({"routing": {"key_template": "x"}, "backends": [{"name": "a"}]});
        let out = apply_env(
            base,
            "UDM",
            env(&[
                ("UDM__ROUTING__KEY_TEMPLATE", "{tenant}:{id}"),
                ("UDM__BACKENDS__0__NAME", "b"),
                ("UDM__BACKENDS__1__NAME", "c"),
                ("UDM__LIMITS__MAX_DEPTH", "7"),
                ("UDM__DEV_SHADOW__ENABLED", "true"),
                ("UDM__STORAGE__KEY_PREFIX", "\"123\""),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"routing": {"key_template": "{tenant}:{id}"}, "backends": [{"name": "b"}, {"name": "c"}],
                   "limits": {"max_depth": 7}, "dev_shadow": {"enabled": true}, "storage": {"key_prefix": "123"}})
        );
    }

    #[test]
    fn reports_bad_overrides() {
        let e =
            apply_env(json!({"a": 1, "b": []}), "UDM", env(&[("UDM__A__X", "1"), ("UDM__B__5", "1"), ("UDM__", "1")]))
                .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert_eq!(e.problems().len(), 3);
    }
}
