//! Unknown keys, all of them at once: before a file is read into its types (which
//! stops at the first problem), its document is walked along the file's JSON Schema
//! and every key the schema does not have is reported, with its line and a
//! did-you-mean, and taken out, so that the rest of the file is still checked in the
//! same pass.

use serde_json::Value;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Reports (offset, message) for every key of `document` that `schema` does not allow,
/// and removes it. `root` holds the schema's `$defs`.
pub(super) fn take_unknown_keys(
    document: &mut DeTable<'_>,
    schema: &Value,
) -> Vec<(usize, String)> {
    let mut problems = Vec::new();
    check_table(document, schema, schema, "", &mut problems);
    problems
}

/// `s` with its `$ref` followed, and an optional's non-null alternative taken.
fn resolve<'a>(s: &'a Value, root: &'a Value) -> &'a Value {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        if let Some(name) = r.strip_prefix("#/$defs/") {
            if let Some(def) = root.get("$defs").and_then(|d| d.get(name)) {
                return resolve(def, root);
            }
        }
        return s;
    }
    for alt in ["anyOf", "oneOf"] {
        if let Some(options) = s.get(alt).and_then(Value::as_array) {
            let objects: Vec<&Value> = options
                .iter()
                .map(|o| resolve(o, root))
                .filter(|o| o.get("properties").is_some())
                .collect();
            if let [one] = objects.as_slice() {
                return one;
            }
        }
    }
    s
}

fn check_table(
    table: &mut DeTable<'_>,
    schema: &Value,
    root: &Value,
    section: &str,
    problems: &mut Vec<(usize, String)>,
) {
    let schema = resolve(schema, root);
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        // A map (`[upstreams.NAME]`): each value against `additionalProperties`.
        if let Some(each) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            for (k, v) in table.iter_mut() {
                let section = join(section, k.get_ref());
                check_value(v, each, root, &section, problems);
            }
        }
        return;
    };
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    let mut unknown = Vec::new();
    for (k, v) in table.iter_mut() {
        match props.get(k.get_ref().as_ref()) {
            Some(p) => check_value(v, p, root, &join(section, k.get_ref()), problems),
            None if closed => unknown.push((k.span().start, k.get_ref().to_string())),
            None => {}
        }
    }
    let known: Vec<&String> = props.keys().collect();
    for (offset, key) in unknown {
        let hint = super::did_you_mean(&key, known.iter().copied())
            .map_or_else(String::new, |m| format!(" (did you mean `{m}`?)"));
        let place = if section.is_empty() {
            String::new()
        } else {
            format!(" in [{section}]")
        };
        problems.push((
            offset,
            format!(
                "unknown key `{key}`{place}{hint}; the keys here are: {}",
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        table.remove(key.as_str());
    }
}

fn check_value(
    value: &mut Spanned<DeValue<'_>>,
    schema: &Value,
    root: &Value,
    section: &str,
    problems: &mut Vec<(usize, String)>,
) {
    let schema = resolve(schema, root);
    match value.get_mut() {
        DeValue::Table(t) => check_table(t, schema, root, section, problems),
        DeValue::Array(items) => {
            if let Some(each) = schema.get("items") {
                for item in items.iter_mut() {
                    check_value(item, each, root, section, problems);
                }
            }
        }
        _ => {}
    }
}

fn join(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    }
}
