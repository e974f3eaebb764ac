//! Property tests of udm-core (strategies come from `udm_testkit::arbitrary`).

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{Value, json};
use udm_core::canonical::canonical_bytes;
use udm_core::diff::diff;
use udm_core::drift::{Observed, detect_drift};
use udm_core::layout::{self, Layout};
use udm_core::metamap::{Base64Prop, MetadataMap};
use udm_core::predicate::Predicate;
use udm_core::retention::{RetentionPolicy, VersionInfo, prunable};
use udm_core::retry::RetryPolicy;
use udm_core::{Checksum, ContentHash, ObjectId, ObjectKey, Ov, RouteContext, Timestamp, deep_merge};
use udm_testkit::arbitrary::{hostile_string, ident_like, json_object, json_value, object_id, route_context};

/// Rebuilds a value with every object's keys inserted in reverse order.
fn reorder(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().rev().map(|(k, v)| (k.clone(), reorder(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(reorder).collect()),
        other => other.clone(),
    }
}

/// Every leaf (scalar) path of a value, as JSON Pointers.
fn leaf_paths(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                leaf_paths(c, format!("{at}/{}", udm_core::diff::escape_segment(k)), out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, c) in a.iter().enumerate() {
                leaf_paths(c, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}

/// Whether every array inside `v` is free of duplicates.
fn arrays_unique(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().enumerate().all(|(i, x)| !a[..i].contains(x)) && a.iter().all(arrays_unique),
        Value::Object(m) => m.values().all(arrays_unique),
        _ => true,
    }
}

proptest! {
    // 1. Identifiers: anything accepted stays under its tenant's prefix, in keys and record ids.
    #[test]
    fn accepted_ids_stay_under_their_tenant(
        t in prop_oneof![ident_like(12), hostile_string()],
        d in prop_oneof![ident_like(12), hostile_string()],
        c in prop_oneof![ident_like(12), hostile_string()],
        id in prop_oneof![ident_like(20), hostile_string()],
        ov in 1u64..u64::MAX,
    ) {
        let (Ok(ctx), Ok(id)) = (RouteContext::new(&t, &d, &c), ObjectId::new(id)) else { return Ok(()) };
        let key = ObjectKey::new(ctx.clone(), id);
        let ov = Ov::new(ov).unwrap();
        let l = Layout::default();
        let tenant = l.tenant_prefix(&ctx.tenant);
        let content = ContentHash::of(b"x");
        let req = udm_core::RequestId::new("req-1.a").unwrap();
        for k in [l.snapshot(&key, ov, &req), l.index_segment(&key, ov), l.content(&key, &content), l.log_segment(&ctx, udm_core::Cv(ov.get()), udm_core::Cv(ov.get() + 1))] {
            prop_assert!(k.starts_with(&tenant), "{k} escapes {tenant}");
            prop_assert!(k.split('/').all(|s| !s.is_empty() && s != "." && s != ".."), "{k}");
            prop_assert!(udm_core::ports::check_key(&k).is_ok(), "{k}");
            prop_assert!(!k.contains('$') && !k.contains('\\'));
        }
        for r in [layout::head_record_id(&key), layout::version_record_id(&key, ov)] {
            let tenant_rec = format!("{}/", ctx.tenant);
            prop_assert!(r.starts_with(&tenant_rec));
            prop_assert!(r.split('/').all(|s| !s.is_empty() && s != ".."));
        }
        prop_assert_eq!(l.parse_snapshot(&l.snapshot(&key, ov, &req)), Some((key, ov, req)));
    }

    #[test]
    fn hostile_ids_are_rejected(s in hostile_string()) {
        let bad = s.is_empty() || s.contains(['/', '\\', '$', '\0', '\n', ' ', 'é']) || s.contains("..") || s.starts_with(['.', '-']);
        if bad {
            prop_assert!(ObjectId::new(s.clone()).is_err(), "{s:?} accepted");
        } else {
            prop_assert!(ObjectId::new(s.clone()).is_ok(), "{s:?} rejected");
        }
    }

    // 2. Snapshot keys sort in OV order.
    #[test]
    fn snapshot_keys_sort_by_ov(ctx in route_context(), id in object_id(), a in 1u64..u64::MAX, b in 1u64..u64::MAX) {
        let key = ObjectKey::new(ctx, id);
        let l = Layout::default();
        let r = udm_core::RequestId::new("r").unwrap();
        let (ka, kb) = (l.snapshot(&key, Ov::new(a).unwrap(), &r), l.snapshot(&key, Ov::new(b).unwrap(), &r));
        prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
    }

    #[test]
    fn timestamps_round_trip(ms in -62_167_219_200_000i64..=253_402_300_799_999) {
        let t = Timestamp::from_millis(ms).unwrap();
        prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_string()).unwrap(), t);
    }

    // 3. Canonical JSON and checksums.
    #[test]
    fn checksum_ignores_key_order(v in json_value(4)) {
        prop_assert_eq!(canonical_bytes(&v), canonical_bytes(&reorder(&v)));
        prop_assert_eq!(Checksum::of_json(&v), Checksum::of_json(&reorder(&v)));
        let reparsed: Value = serde_json::from_slice(&canonical_bytes(&v)).unwrap();
        prop_assert_eq!(Checksum::of_json(&reparsed), Checksum::of_json(&v));
    }

    #[test]
    fn any_leaf_change_changes_the_checksum(v in json_object(3), pick in any::<prop::sample::Index>()) {
        let mut paths = Vec::new();
        leaf_paths(&v, String::new(), &mut paths);
        let path = pick.get(&paths);
        let mut changed = v.clone();
        let slot = changed.pointer_mut(path).unwrap();
        *slot = json!({"changed": slot.clone()});
        prop_assert_ne!(Checksum::of_json(&v), Checksum::of_json(&changed));
    }

    // 4. Deep merge.
    #[test]
    fn merge_is_idempotent(base in json_object(3), patch in json_object(3)) {
        let once = deep_merge(&base, &patch).unwrap();
        let twice = deep_merge(&once, &patch).unwrap();
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn merge_loses_nothing_it_does_not_replace(base in json_object(3), patch in json_object(3)) {
        let merged = deep_merge(&base, &patch).unwrap();
        let mut base_leaves = Vec::new();
        leaf_paths(&base, String::new(), &mut base_leaves);
        for p in base_leaves {
            // A base leaf survives unless some prefix of its path is replaced by the patch.
            let replaced = (0..=p.len()).filter(|i| *i == p.len() || p.as_bytes()[*i] == b'/').any(|i| {
                let prefix = &p[..i];
                match (base.pointer(prefix), patch.pointer(prefix)) {
                    (Some(Value::Object(_)), Some(Value::Object(_))) => false,
                    (Some(Value::Array(_)), Some(Value::Array(_))) => false,
                    (_, Some(_)) => !prefix.is_empty(),
                    _ => false,
                }
            });
            if replaced {
                continue;
            }
            match base.pointer(&p) {
                // An empty container may be filled by the patch, but stays a container.
                Some(Value::Object(_)) => prop_assert!(merged.pointer(&p).is_some_and(Value::is_object), "lost {}", p),
                Some(Value::Array(_)) => prop_assert!(merged.pointer(&p).is_some_and(Value::is_array), "lost {}", p),
                found => prop_assert_eq!(merged.pointer(&p), found, "lost {}", p),
            }
        }
        // And every patch key is present.
        for k in patch.as_object().unwrap().keys() {
            prop_assert!(merged.get(k).is_some());
        }
    }

    #[test]
    fn merge_adds_no_duplicates(base in json_object(3), patch in json_object(3)) {
        prop_assume!(arrays_unique(&base));
        prop_assert!(arrays_unique(&deep_merge(&base, &patch).unwrap()));
    }

    // 5. Diff and drift.
    #[test]
    fn drift_of_identical_states_is_empty(x in json_value(4)) {
        let sum = Checksum::of_json(&x);
        let r = detect_drift(Observed { data: &x, recorded: Some(&sum) }, Observed { data: &x, recorded: Some(&sum) }, Some(&x));
        prop_assert!(r.items.is_empty());
        prop_assert!(r.summary.in_sync);
    }

    #[test]
    fn drift_paths_exist_in_an_input(a in json_value(3), b in json_value(3), c in json_value(3)) {
        let r = detect_drift(Observed::plain(&a), Observed::plain(&b), Some(&c));
        for item in &r.items {
            prop_assert!(a.pointer(&item.path).is_some() || b.pointer(&item.path).is_some() || c.pointer(&item.path).is_some(), "{}", item.path);
        }
        prop_assert_eq!(r.summary.in_sync, r.items.is_empty());
    }

    #[test]
    fn diff_is_empty_iff_equal(a in json_value(3), b in json_value(3)) {
        prop_assert_eq!(diff(&a, &b).is_empty(), a == b);
        prop_assert!(diff(&a, &a).is_empty());
    }

    // 7. Externalization.
    #[test]
    fn externalize_then_rehydrate_is_identity(
        blobs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..4),
        rest in json_object(2),
    ) {
        use base64::Engine as _;
        let map = MetadataMap {
            indexed_props: vec![],
            base64_props: (0..blobs.len()).map(|i| Base64Prop { path: format!("files.f{i}"), content_type: "application/octet-stream".into() }).collect(),
        };
        let mut doc = rest.clone();
        let files: serde_json::Map<String, Value> = blobs.iter().enumerate()
            .map(|(i, b)| (format!("f{i}"), Value::String(base64::engine::general_purpose::STANDARD.encode(b)))).collect();
        doc.as_object_mut().unwrap().insert("files".into(), Value::Object(files));
        let (ext, content) = map.externalize(&doc).unwrap();
        prop_assert_eq!(content.len(), blobs.len());
        let store: HashMap<ContentHash, Vec<u8>> = content.into_iter().map(|c| (c.reference.blake3, c.bytes)).collect();
        prop_assert_eq!(map.rehydrate(&ext, &store).unwrap(), doc);
    }

    // 8. Predicates never panic: any JSON either parses or is a validation error.
    #[test]
    fn predicate_parse_is_total(v in json_value(3), doc in json_value(3)) {
        match Predicate::parse(&v) {
            Ok(p) => { let _ = p.matches(&doc); }
            Err(e) => prop_assert_eq!(e.kind(), udm_core::ErrorKind::Validation),
        }
    }

    // 9. Retry schedule.
    #[test]
    fn retry_delays_are_bounded(base in 1u64..10_000, cap in 1u64..10_000_000, attempt in 1u32..200, sample in any::<u64>()) {
        let p = RetryPolicy { base_delay_ms: base.min(cap), max_delay_ms: cap, max_attempts: 1000 };
        let d = p.delay_ms(attempt, sample);
        prop_assert!(d <= p.upper_bound_ms(attempt));
        prop_assert!(d <= cap);
        prop_assert!(p.upper_bound_ms(attempt) <= p.upper_bound_ms(attempt + 1), "upper bound must not decrease");
    }

    // 10. Retention.
    #[test]
    fn retention_never_prunes_what_must_stay(
        days in prop::option::of(1u32..30),
        max in prop::option::of(1u32..20),
        steps in prop::collection::vec((0i64..5, prop::option::of(any::<prop::sample::Index>())), 1..40),
        now_day in 0i64..200,
    ) {
        let mut versions: Vec<VersionInfo> = Vec::new();
        let mut day = 0;
        for (i, (gap, restore)) in steps.iter().enumerate() {
            day += gap;
            let restored_from = restore.as_ref().filter(|_| i > 0).map(|ix| versions[ix.index(i)].ov);
            versions.push(VersionInfo { ov: Ov::new(i as u64 + 1).unwrap(), at: Timestamp::from_millis(day * 86_400_000).unwrap(), restored_from });
        }
        let policy = RetentionPolicy { days, max_versions_per_item: max };
        let now = Timestamp::from_millis(now_day * 86_400_000).unwrap();
        let pruned = prunable(&versions, &policy, now);
        let head = versions.last().unwrap().ov;
        prop_assert!(!pruned.contains(&head));
        let kept: Vec<&VersionInfo> = versions.iter().filter(|v| !pruned.contains(&v.ov)).collect();
        for v in &kept {
            if let Some(src) = v.restored_from {
                prop_assert!(!pruned.contains(&src), "pruned {:?}, a source of kept {:?}", src, v.ov);
            }
        }
        let n = versions.len();
        for (i, v) in versions.iter().enumerate() {
            if pruned.contains(&v.ov) {
                let too_old = days.is_some_and(|d| v.at.as_millis() < now.as_millis() - i64::from(d) * 86_400_000);
                let too_many = max.is_some_and(|m| n - i > m as usize);
                prop_assert!(too_old || too_many, "pruned {:?} without reason", v.ov);
            }
        }
        if days.is_none() && max.is_none() {
            prop_assert!(pruned.is_empty());
        }
    }
}
