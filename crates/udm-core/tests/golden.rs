//! Golden tests: formats that must never change once data is stored (snapshot envelope,
//! key layout, record ids, checksums). A failure here means stored data would no longer be
//! found or verified: change the format version instead of the format.

use serde_json::json;
use udm_core::canonical::{Checksum, ContentHash};
use udm_core::layout::{self, Layout};
use udm_core::version::{ENVELOPE_FORMAT, Provenance, SnapshotEnvelope, SnapshotRef};
use udm_core::{Cv, Name, ObjectId, ObjectKey, Op, Ov, RequestId, RouteContext, SystemHeader, Timestamp};

fn key() -> ObjectKey {
    ObjectKey::new(RouteContext::new("acme", "crm", "users").unwrap(), ObjectId::new("u-42").unwrap())
}

fn envelope() -> SnapshotEnvelope {
    let at = Timestamp::parse_rfc3339("2026-11-21T19:57:25.123Z").unwrap();
    let created = Timestamp::parse_rfc3339("2026-11-20T08:00:00Z").unwrap();
    let data = json!({"name": "Ada", "tags": ["x", "y"], "score": 1.5, "address": {"city": "Oslo"}});
    let mut system = SystemHeader::created(created).next(Op::Enrich, at, Some("geo-v1"), false);
    system.updated_at = at;
    SnapshotEnvelope {
        format: ENVELOPE_FORMAT.into(),
        key: key(),
        ov: Ov::new(3).unwrap(),
        op: Op::Enrich,
        at,
        provenance: Provenance {
            actor: Some("svc-geo".into()),
            reason: Some("nightly".into()),
            request_id: RequestId::new("01JREQ").unwrap(),
        },
        restored_from: None,
        system,
        indexed: json!({"address.city": "Oslo"}).as_object().unwrap().clone(),
        checksum: Checksum::of_json(&data),
        data,
    }
}

const HEADER: &str = concat!(
    r#"{"at":"2026-11-21T19:57:25.123Z","checksum":"CHECKSUM","#,
    r#""format":"udm.snapshot.v2","indexed":{"address.city":"Oslo"},"key":{"ctx":{"collection":"users","db":"crm","tenant":"acme"},"id":"u-42"},"#,
    r#""op":"ENRICH","ov":3,"provenance":{"actor":"svc-geo","reason":"nightly","requestId":"01JREQ"},"restoredFrom":null,"#,
    r#""system":{"deleted":false,"deletedAt":null,"functionIds":["geo-v1"],"insertedAt":"2026-11-20T08:00:00.000Z","updatedAt":"2026-11-21T19:57:25.123Z"}}"#
);

const DATA: &str = r#"{"address":{"city":"Oslo"},"name":"Ada","score":1.5,"tags":["x","y"]}"#;

const DATA_CHECKSUM: &str = "76228c90a9dca4ce582ce1242f196430445402ea461b516bfd6f47539edfee0a";

const SEAL: &str = "5bcdec2a0faf14b3529e4bfc5523e50d8b9db5eec80b71492605bb346fcae00c";

fn pinned_bytes() -> String {
    let header = HEADER.replace("CHECKSUM", DATA_CHECKSUM);
    format!(r#"{{"data":{DATA},"header":{header},"seal":"{SEAL}"}}"#)
}

fn pinned_ref(env: &SnapshotEnvelope, len: usize) -> SnapshotRef {
    SnapshotRef { key: "k".into(), checksum: env.checksum, seal: env.seal().unwrap(), size: len as u64 }
}

#[test]
fn envelope_bytes_are_pinned() {
    let env = envelope();
    let bytes = String::from_utf8(env.to_bytes().unwrap()).unwrap();
    assert_eq!(env.checksum.to_string(), DATA_CHECKSUM);
    assert_eq!(env.seal().unwrap().to_string(), SEAL);
    assert_eq!(Checksum::of_bytes(HEADER.replace("CHECKSUM", DATA_CHECKSUM).as_bytes()).to_string(), SEAL);
    assert_eq!(bytes, pinned_bytes());
    // And it decodes back to the same envelope, verified against its metadata record.
    let r = pinned_ref(&env, bytes.len());
    let back = SnapshotEnvelope::decode(bytes.as_bytes(), Some(&r)).unwrap();
    assert_eq!(back, env);
    let rec = back.to_record(Cv(17), r);
    assert_eq!((rec.ov.get(), rec.cv, rec.op, rec.deleted), (3, Cv(17), Op::Enrich, false));
}

/// Every field of the envelope is covered: the data by its checksum, the rest by the seal.
#[test]
fn tampered_envelopes_are_rejected() {
    use udm_core::ErrorKind::{ChecksumMismatch, Unsupported};
    let env = envelope();
    let bytes = String::from_utf8(env.to_bytes().unwrap()).unwrap();
    let kind = |b: &str, r: Option<&SnapshotRef>| SnapshotEnvelope::decode(b.as_bytes(), r).unwrap_err().kind();
    for (from, to) in [
        ("\"Ada\"", "\"Eve\""),
        ("\"insertedAt\":\"2026-11-20T08:00:00.000Z\"", "\"insertedAt\":\"2020-01-01T00:00:00.000Z\""),
        ("\"functionIds\":[\"geo-v1\"]", "\"functionIds\":[]"),
        ("\"actor\":\"svc-geo\"", "\"actor\":\"mallory\""),
        ("\"format\":\"udm.snapshot.v2\"", "\"format\":\"udm.snapshot.v3\""),
        ("\"format\":\"udm.snapshot.v2\"", "\"format\":\"udm.snapshot.w2\""),
        ("\"ov\":3", "\"ov\":4"),
    ] {
        let tampered = bytes.replace(from, to);
        assert_ne!(tampered, bytes, "{from}");
        assert_eq!(kind(&tampered, None), ChecksumMismatch, "{from} -> {to}");
    }
    // A rewrite that recomputes the seal is still caught by the metadata record's pin.
    let r = pinned_ref(&env, bytes.len());
    let mut forged = env.clone();
    forged.system.function_ids.clear();
    let forged = String::from_utf8(forged.to_bytes().unwrap()).unwrap();
    SnapshotEnvelope::decode(forged.as_bytes(), None).unwrap();
    assert_eq!(kind(&forged, Some(&r)), ChecksumMismatch);
    let other = SnapshotRef { checksum: Checksum::of_bytes(b"metadata says something else"), ..r.clone() };
    assert_eq!(kind(&bytes, Some(&other)), ChecksumMismatch);
    assert_eq!(kind("not json", None), ChecksumMismatch);
    assert_eq!(kind(&format!("{}x", &bytes[..bytes.len() - 1]), None), ChecksumMismatch);
    // A correctly sealed envelope of another format version is Unsupported, not corrupt.
    let mut future = env.clone();
    future.format = "udm.snapshot.v9".into();
    let future = String::from_utf8(future.to_bytes().unwrap()).unwrap();
    assert_eq!(kind(&future, None), Unsupported);
}

#[test]
fn key_layout_is_pinned() {
    let k = key();
    let ov = Ov::new(1025).unwrap();
    let plain = Layout::default();
    let r = RequestId::new("01JREQ.retry-2").unwrap();
    assert_eq!(
        plain.snapshot(&k, ov, &r),
        "acme/crm/users/objects/u-42/versions/00000000000000001025.01JREQ.retry-2.json"
    );
    assert_eq!(plain.snapshot_prefix(&k, ov), "acme/crm/users/objects/u-42/versions/00000000000000001025.");
    assert_eq!(plain.index_segment(&k, ov), "acme/crm/users/objects/u-42/index/00000000000000000004.json");
    assert_eq!(
        plain.index_segment(&k, Ov::new(256).unwrap()),
        "acme/crm/users/objects/u-42/index/00000000000000000000.json"
    );
    let marker = udm_core::shadow::index::Marker {
        segment: 4,
        at: udm_core::Timestamp::from_millis(1_700_000_000_123).unwrap(),
        cv: udm_core::Cv(77),
    };
    assert_eq!(
        plain.index_marker(&k, &marker),
        "acme/crm/users/objects/u-42/index/first/00000000000000000004.1700000000123.77"
    );
    assert_eq!(udm_core::shadow::index::Marker::parse(&marker.file_name()), Some(marker));
    let hash = ContentHash::of(b"hello");
    assert_eq!(plain.content(&k, &hash), format!("acme/crm/users/content/u-42/{hash}"));
    assert_eq!(hash.to_string(), "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f");
    assert_eq!(
        plain.log_segment(&k.ctx, Cv(7), Cv(9)),
        "acme/crm/users/log/00000000000000000007-00000000000000000009.json"
    );
    assert_eq!(plain.backup(&k.ctx, &Name::new("2026-11-21").unwrap()), "acme/crm/users/backups/2026-11-21");
    let prefixed = Layout::new(Some(Name::new("udm").unwrap()));
    assert_eq!(
        prefixed.snapshot(&k, Ov::FIRST, &r),
        "udm/acme/crm/users/objects/u-42/versions/00000000000000000001.01JREQ.retry-2.json"
    );
    assert_eq!(prefixed.parse_snapshot(&prefixed.snapshot(&k, ov, &r)), Some((k.clone(), ov, r.clone())));
    assert_eq!(plain.parse_snapshot("acme/crm/users/objects/u-42/versions/1.r.json"), None);
    assert_eq!(plain.parse_snapshot("acme/crm/users/objects/u-42/versions/00000000000000000001.json"), None);
    assert_eq!(plain.parse_snapshot("acme/crm/users/objects/u-42/index/00000000000000000001.json"), None);
}

#[test]
fn record_ids_are_pinned() {
    let k = key();
    assert_eq!(layout::head_record_id(&k), "acme/crm/users/u-42");
    assert_eq!(layout::version_record_id(&k, Ov::new(2).unwrap()), "acme/crm/users/u-42/00000000000000000002");
    assert_eq!(layout::collection_record_prefix(&k.ctx), "acme/crm/users/");
}
