//! `-o jsonpath=TEMPLATE`, as kubectl has it: text with `{…}` blocks, each a JSONPath
//! expression relative to the current object (`{.items[*].name}`; the leading `$` may be left
//! out), a quoted string (`{"\n"}`), or `{range EXPR}…{end}` to repeat the inside for every
//! match. Several matches of one expression print separated by spaces; strings print bare,
//! everything else as JSON. The queries themselves are RFC 9535 JSONPath (serde_json_path).
//!
//! Lists are presented as `{"kind": "List", "items": […]}`, so kubectl users' `.items[*]` works.

use serde_json::Value;
use serde_json_path::JsonPath;

/// One piece of a parsed template.
#[derive(Debug)]
enum Piece {
    Text(String),
    Query(JsonPath),
    Range(JsonPath, Vec<Piece>),
}

/// Longest template accepted, and deepest `range` nesting.
const MAX_TEMPLATE: usize = 4096;
const MAX_DEPTH: usize = 8;

/// A template checked once, applied to any number of documents.
#[derive(Debug)]
pub struct Template(Vec<Piece>);

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_TEMPLATE {
            return Err(format!(
                "jsonpath template: longer than {MAX_TEMPLATE} bytes"
            ));
        }
        let mut rest = text;
        let pieces = parse_until_end(&mut rest, 0)?;
        if !rest.is_empty() {
            return Err("jsonpath template: `{end}` without `{range …}`".into());
        }
        Ok(Self(pieces))
    }

    /// The template applied to `value` (a list is first wrapped as `{"items": […]}`).
    pub fn render(&self, value: &Value) -> String {
        let root = match value {
            Value::Array(items) => serde_json::json!({"kind": "List", "items": items}),
            other => other.clone(),
        };
        let mut out = String::new();
        render(&self.0, &root, &mut out);
        out
    }
}

fn parse_until_end(rest: &mut &str, depth: usize) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    loop {
        let Some(open) = rest.find('{') else {
            if !rest.is_empty() {
                pieces.push(Piece::Text(rest.to_string()));
            }
            *rest = "";
            return if depth > 0 {
                Err("jsonpath template: `{range …}` without `{end}`".into())
            } else {
                Ok(pieces)
            };
        };
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        let inner_start = open + 1;
        let close = block_end(&rest[inner_start..])
            .ok_or("jsonpath template: a `{` without its `}`")?
            + inner_start;
        let block = rest[inner_start..close].trim();
        *rest = &rest[close + 1..];
        if block == "end" {
            return if depth > 0 {
                Ok(pieces)
            } else {
                Err("jsonpath template: `{end}` without `{range …}`".into())
            };
        }
        if let Some(expr) = block.strip_prefix("range ") {
            if depth + 1 > MAX_DEPTH {
                return Err(format!(
                    "jsonpath template: ranges nested deeper than {MAX_DEPTH}"
                ));
            }
            let query = query(expr)?;
            let inner = parse_until_end(rest, depth + 1)?;
            pieces.push(Piece::Range(query, inner));
        } else if let Some(literal) = quoted(block) {
            pieces.push(Piece::Text(literal?));
        } else {
            pieces.push(Piece::Query(query(block)?));
        }
    }
}

/// Where a block's `}` is, skipping braces inside quoted strings.
fn block_end(text: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '}') => return Some(i),
            _ => {}
        }
    }
    None
}

/// A `"…"` block's text, with `\n`, `\t`, `\"` and `\\` read as kubectl does.
fn quoted(block: &str) -> Option<Result<String, String>> {
    let inner = block.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(c @ ('"' | '\\')) => out.push(c),
            other => {
                return Some(Err(format!(
                    "jsonpath template: unknown escape `\\{}` in {block}",
                    other.map(String::from).unwrap_or_default()
                )));
            }
        }
    }
    Some(Ok(out))
}

fn query(expr: &str) -> Result<JsonPath, String> {
    let expr = expr.trim();
    let full = if expr.starts_with('$') {
        expr.to_owned()
    } else if expr.starts_with('.') || expr.starts_with('[') {
        format!("${expr}")
    } else {
        format!("$.{expr}")
    };
    JsonPath::parse(&full).map_err(|e| format!("jsonpath template: {expr}: {e}"))
}

fn render(pieces: &[Piece], current: &Value, out: &mut String) {
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Query(q) => {
                let found: Vec<String> = q.query(current).all().into_iter().map(text).collect();
                out.push_str(&found.join(" "));
            }
            Piece::Range(q, inner) => {
                for item in q.query(current).all() {
                    render(inner, item, out);
                }
            }
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Value {
        serde_json::json!([
            {"name": "pi-1", "health": "Ready", "labels": {"zone": "shed"}},
            {"name": "pi-2", "health": "Down", "labels": {}},
        ])
    }

    #[test]
    fn kubectl_templates_print_what_they_select() {
        let t = |s: &str| Template::parse(s).unwrap().render(&nodes());
        assert_eq!(t("{.items[*].name}"), "pi-1 pi-2");
        assert_eq!(t("{$.items[0].labels.zone}"), "shed");
        assert_eq!(
            t("{range .items[*]}{.name}={.health}{\"\\n\"}{end}"),
            "pi-1=Ready\npi-2=Down\n"
        );
        assert_eq!(t("nodes: {.items[?@.health=='Ready'].name}"), "nodes: pi-1");
        assert_eq!(t("{.items[1].labels}"), "{}");
        assert_eq!(t("{.kind}"), "List");
        let one = Template::parse("{.name}").unwrap();
        assert_eq!(one.render(&serde_json::json!({"name": "f"})), "f");
    }

    #[test]
    fn broken_templates_are_refused_with_what_is_wrong() {
        for (bad, why) in [
            ("{.items[", "a `{` without its `}`"),
            ("{range .items[*]}{.name}", "without `{end}`"),
            ("{.name}{end}", "`{end}` without"),
            ("{.items[?]}", ".items[?]"),
            ("{\"\\q\"}", "unknown escape"),
        ] {
            let err = Template::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let deep = "{range .a}".repeat(9) + &"{end}".repeat(9);
        assert!(
            Template::parse(&deep)
                .unwrap_err()
                .contains("nested deeper")
        );
        assert!(Template::parse(&"x".repeat(5000)).is_err());
    }
}
