//! # udm-router — rendezvous hashing over backend pairs
//!
//! Every object is stored on exactly one of 1–10 backend pairs, chosen by
//! **highest-random-weight (rendezvous) hashing**: each pair scores the object's routing key
//! (rendered from the configured [`KeyTemplate`]) and the highest score wins. Scores depend
//! only on the key and the pair's *name*, so:
//! - routing is deterministic across processes, platforms and releases;
//! - adding a pair moves only the keys that now score highest on it;
//! - removing a pair moves only its own keys (to their second choice);
//! - the order of pairs in the configuration does not matter.
//!
//! ```
//! use udm_core::{ObjectId, RouteContext};
//! use udm_router::Router;
//!
//! let router = Router::new(["pair-a", "pair-b", "pair-c"], "{tenant}|{db}|{collection}:{id}").unwrap();
//! let ctx = RouteContext::new("acme", "crm", "users").unwrap();
//! let id = ObjectId::new("u-42").unwrap();
//! let route = router.route(&ctx, &id);
//! assert_eq!(route, router.route(&ctx, &id)); // deterministic
//! // An object found on another pair than its route is a typed error.
//! let other = (route.index + 1) % 3;
//! assert!(router.check(&ctx, &id, other).is_err());
//! ```

use udm_core::canonical::stable_hash64;
use udm_core::config::{Config, MAX_BACKENDS};
use udm_core::id::{MAX_CONTEXT_PART_BYTES, check_ident};
use udm_core::route_key::KeyTemplate;
use udm_core::{Error, ErrorKind, ObjectId, Problem, Result, RouteContext};

/// Where an object lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// Index of the pair in the router's (configuration) order.
    pub index: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pair {
    name: String,
    seed: u64,
}

/// A rendezvous router over named pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    pairs: Vec<Pair>,
    template: KeyTemplate,
}

/// The 64-bit finalizer of MurmurHash3: a bijective mix, so distinct inputs score distinctly.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

impl Router {
    /// A router over the named pairs (1–10 distinct identifiers) with a key template.
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>, template: &str) -> Result<Self> {
        let names: Vec<String> = names.into_iter().map(|s| s.as_ref().to_owned()).collect();
        let mut problems = Vec::new();
        if names.is_empty() || names.len() > MAX_BACKENDS {
            problems.push(Problem::new("backends", format!("needs 1 to {MAX_BACKENDS} pairs, found {}", names.len())));
        }
        for (i, n) in names.iter().enumerate() {
            if let Err(e) = check_ident(&format!("backends[{i}].name"), n, MAX_CONTEXT_PART_BYTES) {
                problems.extend(e.problems().iter().cloned());
            }
            if names[..i].contains(n) {
                problems.push(Problem::new(format!("backends[{i}].name"), format!("duplicate pair name {n:?}")));
            }
        }
        let template = match KeyTemplate::parse(template) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.extend(e.problems().iter().cloned());
                None
            }
        };
        match template {
            Some(template) if problems.is_empty() => Ok(Self {
                pairs: names.into_iter().map(|name| Pair { seed: stable_hash64(name.as_bytes()), name }).collect(),
                template,
            }),
            _ => Err(Error::invalid(ErrorKind::Config, problems)),
        }
    }

    /// The router a validated configuration describes.
    pub fn from_config(cfg: &Config) -> Result<Self> {
        Self::new(cfg.backends.iter().map(|b| b.name.as_str()), &cfg.routing.key_template)
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Never true: a router has at least one pair.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The pair names, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|p| p.name.as_str())
    }

    /// The key template.
    pub fn template(&self) -> &KeyTemplate {
        &self.template
    }

    fn score(pair: &Pair, key_hash: u64) -> (u64, &str) {
        (fmix64(key_hash ^ pair.seed), pair.name.as_str())
    }

    /// The pair of a raw routing key.
    pub fn route_key(&self, key: &str) -> Route {
        let h = stable_hash64(key.as_bytes());
        let index = (0..self.pairs.len()).max_by_key(|i| Self::score(&self.pairs[*i], h)).unwrap_or(0);
        Route { index }
    }

    /// The pair of one object.
    pub fn route(&self, ctx: &RouteContext, id: &ObjectId) -> Route {
        self.route_key(&self.template.render(ctx, id))
    }

    /// The pair of every object of `ctx`, when the routing key does not depend on the object
    /// id (a template without `{id}`) or there is only one pair; `None` when a collection
    /// spreads over pairs.
    pub fn collection_route(&self, ctx: &RouteContext) -> Option<Route> {
        if self.pairs.len() == 1 {
            return Some(Route { index: 0 });
        }
        if self.template.uses_id() {
            return None;
        }
        // The id is not part of the key: any valid id renders the same key.
        ObjectId::new("_").ok().map(|id| self.route(ctx, &id))
    }

    /// Every pair, best first, for one object (fallback order and rebalancing).
    pub fn ranking(&self, ctx: &RouteContext, id: &ObjectId) -> Vec<Route> {
        let h = stable_hash64(self.template.render(ctx, id).as_bytes());
        let mut idx: Vec<usize> = (0..self.pairs.len()).collect();
        idx.sort_by_key(|i| std::cmp::Reverse(Self::score(&self.pairs[*i], h)));
        idx.into_iter().map(|index| Route { index }).collect()
    }

    /// Fails with [`ErrorKind::RouteMismatch`] unless `found_on` is the object's route.
    pub fn check(&self, ctx: &RouteContext, id: &ObjectId, found_on: usize) -> Result<()> {
        let want = self.route(ctx, id).index;
        if want == found_on {
            return Ok(());
        }
        let name = |i: usize| self.pairs.get(i).map_or("?", |p| p.name.as_str());
        Err(Error::new(
            ErrorKind::RouteMismatch,
            format!("{ctx}/{id} is on pair {:?} but routes to {:?}; run rebalance", name(found_on), name(want)),
        ))
    }

    /// The same router with one more pair (appended).
    pub fn with_pair(&self, name: &str) -> Result<Self> {
        Self::new(self.names().chain([name]), self.template.as_str())
    }

    /// The same router without the named pair.
    pub fn without_pair(&self, name: &str) -> Result<Self> {
        if !self.names().any(|n| n == name) {
            return Err(Error::not_found(format!("pair {name:?}")));
        }
        Self::new(self.names().filter(|n| *n != name), self.template.as_str())
    }

    /// The name of the pair at `route`.
    pub fn name_of(&self, route: Route) -> Option<&str> {
        self.pairs.get(route.index).map(|p| p.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_pair_sets() {
        assert_eq!(Router::new(Vec::<&str>::new(), "{id}").unwrap_err().kind(), ErrorKind::Config);
        assert!(Router::new((0..11).map(|i| format!("p{i}")), "{id}").is_err());
        let e = Router::new(["a", "a", "b/c"], "{nope}").unwrap_err();
        assert_eq!(e.problems().len(), 3);
    }

    #[test]
    fn pinned_routes_never_change() {
        // Stored data depends on these: a change here strands objects on the wrong pair.
        let r = Router::new(["pair-a", "pair-b", "pair-c"], "{tenant}|{db}|{collection}:{id}").unwrap();
        let got: Vec<usize> = (0..12).map(|i| r.route_key(&format!("acme|crm|users:u{i}")).index).collect();
        assert_eq!(got, PINNED);
    }

    const PINNED: [usize; 12] = [0, 2, 2, 1, 2, 2, 0, 1, 0, 0, 0, 1];

    #[test]
    fn config_order_does_not_matter() {
        let a = Router::new(["x", "y", "z"], "{id}").unwrap();
        let b = Router::new(["z", "x", "y"], "{id}").unwrap();
        for i in 0..200 {
            let k = format!("k{i}");
            assert_eq!(a.name_of(a.route_key(&k)), b.name_of(b.route_key(&k)));
        }
    }

    #[test]
    fn collection_routes_only_without_id() {
        let ctx = RouteContext::new("t", "d", "c").unwrap();
        let spread = Router::new(["a", "b"], "{tenant}|{db}|{collection}:{id}").unwrap();
        assert_eq!(spread.collection_route(&ctx), None);
        let whole = Router::new(["a", "b"], "{tenant}|{db}|{collection}").unwrap();
        let r = whole.collection_route(&ctx).unwrap();
        for i in 0..50 {
            assert_eq!(whole.route(&ctx, &ObjectId::new(format!("o{i}")).unwrap()), r);
        }
        assert_eq!(Router::new(["a"], "{id}").unwrap().collection_route(&ctx), Some(Route { index: 0 }));
    }

    #[test]
    fn without_unknown_pair_is_not_found() {
        let r = Router::new(["x"], "{id}").unwrap();
        assert_eq!(r.without_pair("y").unwrap_err().kind(), ErrorKind::NotFound);
    }
}
