//! Rendezvous routing properties: determinism, spread, minimal movement.

use proptest::prelude::*;
use udm_router::Router;
use udm_testkit::arbitrary::{object_id, route_context};

const TEMPLATE: &str = "{tenant}|{db}|{collection}:{id}";

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("pair-{i}")).collect()
}

proptest! {
    #[test]
    fn deterministic_and_in_range(ctx in route_context(), id in object_id(), n in 1usize..=10) {
        let a = Router::new(names(n), TEMPLATE).unwrap();
        let b = Router::new(names(n), TEMPLATE).unwrap();
        let r = a.route(&ctx, &id);
        prop_assert!(r.index < n);
        prop_assert_eq!(r, b.route(&ctx, &id));
        prop_assert_eq!(a.ranking(&ctx, &id)[0], r);
        prop_assert!(a.check(&ctx, &id, r.index).is_ok());
    }

    #[test]
    fn adding_a_pair_moves_only_keys_to_it(ctx in route_context(), id in object_id(), n in 1usize..10) {
        let before = Router::new(names(n), TEMPLATE).unwrap();
        let after = before.with_pair("new-pair").unwrap();
        let (was, now) = (before.route(&ctx, &id), after.route(&ctx, &id));
        let now_name = after.name_of(now).unwrap();
        prop_assert!(now_name == "new-pair" || now_name == before.name_of(was).unwrap());
    }

    #[test]
    fn removing_a_pair_moves_only_its_keys(ctx in route_context(), id in object_id(), n in 2usize..=10, victim in 0usize..10) {
        let before = Router::new(names(n), TEMPLATE).unwrap();
        let victim = format!("pair-{}", victim % n);
        let after = before.without_pair(&victim).unwrap();
        let was = before.name_of(before.route(&ctx, &id)).unwrap().to_owned();
        let now = after.name_of(after.route(&ctx, &id)).unwrap().to_owned();
        if was == victim {
            // Moves to its second choice.
            let second = before.ranking(&ctx, &id)[1];
            prop_assert_eq!(now, before.name_of(second).unwrap());
        } else {
            prop_assert_eq!(now, was);
        }
    }
}

/// Spread over 10 pairs and 100,000 keys: each pair gets 10% ± 0.6% (binomial σ ≈ 0.095%,
/// so this tolerance is over 6σ — a failure means real skew, not bad luck).
#[test]
fn spread_is_even_within_tolerance() {
    let r = Router::new(names(10), TEMPLATE).unwrap();
    let mut counts = [0usize; 10];
    for i in 0..100_000 {
        counts[r.route_key(&format!("tenant|db|coll:obj-{i}")).index] += 1;
    }
    for (i, c) in counts.iter().enumerate() {
        assert!((9_400..=10_600).contains(c), "pair {i} got {c} of 100000: {counts:?}");
    }
}

/// Adding an 11th-style pair to 3 moves about a quarter of the keys, all to the new pair.
#[test]
fn growth_moves_the_expected_share() {
    let before = Router::new(names(3), TEMPLATE).unwrap();
    let after = before.with_pair("pair-3").unwrap();
    let mut moved = 0;
    for i in 0..40_000 {
        let k = format!("k{i}");
        let (a, b) = (before.route_key(&k), after.route_key(&k));
        if before.name_of(a) != after.name_of(b) {
            assert_eq!(after.name_of(b), Some("pair-3"));
            moved += 1;
        }
    }
    assert!((9_400..=10_600).contains(&moved), "moved {moved} of 40000, expected about 10000");
}
