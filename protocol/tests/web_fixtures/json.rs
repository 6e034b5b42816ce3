//! A JSON value with its keys in the order written (the fixture files are compared as
//! text), and the helpers that build the TS codec's representation of Rust values.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The largest integer a JS number holds exactly (2^53 - 1).
pub(crate) const JS_SAFE: i64 = (1 << 53) - 1;

#[derive(Debug, Clone)]
pub(crate) enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Bytes(Vec<u8>),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

pub(crate) fn render(j: &J, indent: usize, out: &mut String) {
    let pad = |n: usize| "  ".repeat(n);
    match j {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Num(n) => out.push_str(n),
        J::Str(s) => quote(s, out),
        J::Bytes(b) => {
            out.push_str("{ \"$bytes\": ");
            quote(&hex::encode(b), out);
            out.push_str(" }");
        }
        J::Arr(items) if items.is_empty() => out.push_str("[]"),
        J::Arr(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                render(item, indent + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        J::Obj(fields) if fields.is_empty() => out.push_str("{}"),
        J::Obj(fields) => {
            out.push_str("{\n");
            for (i, (k, v)) in fields.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                quote(k, out);
                out.push_str(": ");
                render(v, indent + 1, out);
                out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
    }
}

pub(crate) fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `group_id` -> `groupId`.
pub(crate) fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// An object from Rust field names (made camelCase).
pub(crate) fn obj(fields: Vec<(&str, J)>) -> J {
    J::Obj(fields.into_iter().map(|(k, v)| (camel(k), v)).collect())
}

/// An enum value: the tag first, then the fields.
pub(crate) fn tagged(tag: &str, variant: &str, fields: Vec<(&str, J)>) -> J {
    let mut all = vec![(tag.to_string(), J::Str(variant.to_string()))];
    all.extend(fields.into_iter().map(|(k, v)| (camel(k), v)));
    J::Obj(all)
}

pub(crate) fn s(v: &str) -> J {
    J::Str(v.to_string())
}
pub(crate) fn u32n(v: u32) -> J {
    J::Num(v.to_string())
}
pub(crate) fn u64s(v: u64) -> J {
    J::Str(v.to_string())
}
pub(crate) fn i64n(v: i64) -> J {
    assert!(
        (-JS_SAFE..=JS_SAFE).contains(&v),
        "i64 {v} is outside ±(2^53-1): the TS codec refuses it, so no fixture may hold it"
    );
    J::Num(v.to_string())
}
pub(crate) fn b(v: bool) -> J {
    J::Bool(v)
}
pub(crate) fn opt<T>(v: &Option<T>, f: impl Fn(&T) -> J) -> J {
    v.as_ref().map_or(J::Null, f)
}
pub(crate) fn strs(v: &[String]) -> J {
    J::Arr(v.iter().map(|x| s(x)).collect())
}
pub(crate) fn map(m: &BTreeMap<String, String>) -> J {
    J::Obj(m.iter().map(|(k, v)| (k.clone(), s(v))).collect())
}
