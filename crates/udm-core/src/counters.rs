//! Counter rules: which counters a committed version moves.
//!
//! Every collection has base totals: `created`, `updated` (UPDATE and ENRICH), `deleted`,
//! `restored` and `live` (objects not logically deleted). Conditional totals come from
//! [`CounterRule`]s: a rule counts a version when its op is in `on` and its `when` predicate
//! matches the version's *subject*:
//!
//! ```json
//! {"data": {…the version's data…}, "system": {…lifecycle header…},
//!  "op": "UPDATE", "actor": "…", "reason": "…"}
//! ```
//!
//! so `when` can test data (`data.status`) or metadata (`system.deleted`, `actor`).
//! Rule counters are named `rule.<name>`.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::Problem;
use crate::id::{Name, RouteContext};
use crate::predicate::Predicate;
use crate::version::{Op, Provenance, SystemHeader};

/// Base counter: creates.
pub const CREATED: &str = "created";
/// Base counter: updates and enrichments.
pub const UPDATED: &str = "updated";
/// Base counter: logical deletes.
pub const DELETED: &str = "deleted";
/// Base counter: restores.
pub const RESTORED: &str = "restored";
/// Base counter: objects currently not deleted.
pub const LIVE: &str = "live";

/// A conditional total, as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterRuleConfig {
    /// Counter name (an identifier); counted as `rule.<name>`.
    pub name: String,
    /// Ops that may count (empty = all).
    #[serde(default)]
    pub on: Vec<Op>,
    /// Predicate over the subject (see module docs); absent = always.
    #[serde(default)]
    pub when: Option<Value>,
}

/// A validated counter rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterRule {
    /// The counter it moves (`rule.<name>`).
    pub counter: String,
    /// Ops that may count (empty = all).
    pub on: Vec<Op>,
    /// The predicate.
    pub when: Predicate,
}

impl CounterRule {
    /// Validates a configured rule; problems are reported under `at`.
    pub fn from_config(c: &CounterRuleConfig, at: &str) -> std::result::Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        if let Err(e) = Name::new(c.name.as_str()) {
            problems.extend(e.problems().iter().map(|p| Problem::new(format!("{at}.name"), p.message.clone())));
        }
        let when = match c.when.as_ref().map(Predicate::parse).transpose() {
            Ok(p) => p.unwrap_or(Predicate::True),
            Err(e) => {
                problems.extend(
                    e.problems().iter().map(|p| Problem::new(format!("{at}.when.{}", p.path), p.message.clone())),
                );
                Predicate::True
            }
        };
        if problems.is_empty() {
            Ok(Self { counter: format!("rule.{}", c.name), on: c.on.clone(), when })
        } else {
            Err(problems)
        }
    }
}

/// A change to one counter of one collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterDelta {
    /// The collection.
    pub ctx: RouteContext,
    /// The counter.
    pub counter: String,
    /// How much it moves.
    pub delta: i64,
}

/// What a committed version did, for counting.
#[derive(Debug, Clone, Copy)]
pub struct CountedVersion<'a> {
    /// The op.
    pub op: Op,
    /// Whether the object was deleted before this version (false for creates).
    pub was_deleted: bool,
    /// The version's lifecycle header.
    pub system: &'a SystemHeader,
    /// Who and why.
    pub provenance: &'a Provenance,
    /// The version's data.
    pub data: &'a Value,
}

/// The counter deltas one committed version causes.
pub fn deltas(ctx: &RouteContext, v: &CountedVersion<'_>, rules: &[CounterRule]) -> Vec<CounterDelta> {
    let mut out: Vec<(String, i64)> = Vec::new();
    let base = match v.op {
        Op::Create => CREATED,
        Op::Update | Op::Enrich => UPDATED,
        Op::Delete => DELETED,
        Op::Restore => RESTORED,
    };
    out.push((base.to_owned(), 1));
    let live = match (v.op, v.was_deleted, v.system.deleted) {
        (Op::Create, _, _) => 1,
        (_, false, true) => -1,
        (_, true, false) => 1,
        _ => 0,
    };
    if live != 0 {
        out.push((LIVE.to_owned(), live));
    }
    let subject = subject(v);
    for r in rules {
        if (r.on.is_empty() || r.on.contains(&v.op)) && r.when.matches(&subject) {
            out.push((r.counter.clone(), 1));
        }
    }
    out.into_iter().map(|(counter, delta)| CounterDelta { ctx: ctx.clone(), counter, delta }).collect()
}

fn subject(v: &CountedVersion<'_>) -> Value {
    json!({
        "data": v.data,
        "system": v.system,
        "op": v.op.as_str(),
        "actor": v.provenance.actor,
        "reason": v.provenance.reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::RequestId;
    use crate::time::Timestamp;

    fn rule(name: &str, on: Vec<Op>, when: Value) -> CounterRule {
        CounterRule::from_config(&CounterRuleConfig { name: name.into(), on, when: Some(when) }, "r").unwrap()
    }

    #[test]
    fn base_and_rule_deltas() {
        let ctx = RouteContext::new("t", "d", "c").unwrap();
        let sys = SystemHeader::created(Timestamp::EPOCH);
        let prov = Provenance { actor: Some("bot".into()), reason: None, request_id: RequestId::new("r1").unwrap() };
        let data = serde_json::json!({"status": "vip"});
        let rules = [
            rule("vips", vec![Op::Create], serde_json::json!({"data.status": "vip"})),
            rule("by_bot", vec![], serde_json::json!({"actor": "bot"})),
            rule("updates", vec![Op::Update], serde_json::json!({})),
        ];
        let v = CountedVersion { op: Op::Create, was_deleted: false, system: &sys, provenance: &prov, data: &data };
        let got: Vec<_> = deltas(&ctx, &v, &rules).into_iter().map(|d| (d.counter, d.delta)).collect();
        assert_eq!(
            got,
            [("created".into(), 1), ("live".into(), 1), ("rule.vips".into(), 1), ("rule.by_bot".into(), 1)]
        );

        let deleted = sys.next(Op::Delete, Timestamp::EPOCH, None, false);
        let v = CountedVersion { op: Op::Delete, was_deleted: false, system: &deleted, provenance: &prov, data: &data };
        let got: Vec<_> = deltas(&ctx, &v, &[]).into_iter().map(|d| (d.counter, d.delta)).collect();
        assert_eq!(got, [("deleted".into(), 1), ("live".into(), -1)]);
    }

    #[test]
    fn bad_rules_are_reported_with_paths() {
        let c = CounterRuleConfig { name: "a/b".into(), on: vec![], when: Some(serde_json::json!({"x": {"$bad": 1}})) };
        let p = CounterRule::from_config(&c, "counter_rules[0]").unwrap_err();
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["counter_rules[0].name", "counter_rules[0].when.x.$bad"]);
    }
}
