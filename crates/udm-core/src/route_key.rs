//! Routing key templates: which parts of an object's address decide its backend pair.
//!
//! A template is literal text with placeholders `{tenant}`, `{db}`, `{collection}` and
//! `{id}`, e.g. the default `{tenant}|{db}|{collection}:{id}` (every object routed on its
//! own) or `{tenant}` (each tenant on one pair). `{{` and `}}` are literal braces.

use crate::error::{Error, Result};
use crate::id::{ObjectId, RouteContext};

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Tenant,
    Db,
    Collection,
    Id,
}

/// A parsed routing key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    pieces: Vec<Piece>,
    source: String,
}

impl KeyTemplate {
    /// Parses a template; unknown placeholders, unbalanced braces and templates without any
    /// placeholder are validation errors.
    pub fn parse(template: &str) -> Result<Self> {
        let err = |m: String| Error::validation("routing.key_template", m);
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = template.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(err("unterminated placeholder (missing '}')".into())),
                        }
                    }
                    let piece = match name.as_str() {
                        "tenant" => Piece::Tenant,
                        "db" => Piece::Db,
                        "collection" => Piece::Collection,
                        "id" => Piece::Id,
                        other => {
                            return Err(err(format!(
                                "unknown placeholder {{{other}}}; use tenant, db, collection or id"
                            )));
                        }
                    };
                    if !lit.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut lit)));
                    }
                    pieces.push(piece);
                }
                '}' => return Err(err("unbalanced '}' (write '}}' for a literal brace)".into())),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Literal(lit));
        }
        if !pieces.iter().any(|p| !matches!(p, Piece::Literal(_))) {
            return Err(err("must contain at least one placeholder".into()));
        }
        Ok(Self { pieces, source: template.to_owned() })
    }

    /// Whether the key depends on the object id (if not, whole collections route together).
    pub fn uses_id(&self) -> bool {
        self.pieces.contains(&Piece::Id)
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The routing key of one object.
    pub fn render(&self, ctx: &RouteContext, id: &ObjectId) -> String {
        let mut out = String::with_capacity(64);
        for p in &self.pieces {
            out.push_str(match p {
                Piece::Literal(s) => s,
                Piece::Tenant => ctx.tenant.as_str(),
                Piece::Db => ctx.db.as_str(),
                Piece::Collection => ctx.collection.as_str(),
                Piece::Id => id.as_str(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_placeholders_and_escapes() {
        let t = KeyTemplate::parse("{{x}}{tenant}|{db}|{collection}:{id}").unwrap();
        let ctx = RouteContext::new("t1", "crm", "users").unwrap();
        assert_eq!(t.render(&ctx, &ObjectId::new("u1").unwrap()), "{x}t1|crm|users:u1");
        assert!(t.uses_id());
        assert!(!KeyTemplate::parse("{tenant}").unwrap().uses_id());
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in ["{tenat}", "plain", "{tenant", "a}b", ""] {
            assert!(KeyTemplate::parse(bad).is_err(), "{bad:?}");
        }
    }
}
