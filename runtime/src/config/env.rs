//! `${VAR}` and `${VAR:-default}` substitution in configuration text.
//!
//! Substitution runs on the raw TOML text, line by line, before parsing, so every line
//! number a later error names is still right. A substituted value is escaped for a
//! TOML basic string (`"..."`), where such values belong. `$$` stands for a literal `$`.
//! Comment lines are left alone.

/// Substitutes environment variables in `text`. `lookup` answers a variable's value.
/// Returns every problem as `(line, message)`.
pub fn substitute(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<(usize, String)>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') || !line.contains('$') {
            out.push_str(line);
            continue;
        }
        match substitute_line(line, &lookup) {
            Ok(s) => out.push_str(&s),
            Err(msg) => {
                problems.push((i + 1, msg));
                out.push_str(line);
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn substitute_line(line: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        let Some(body_and_rest) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body_and_rest.find('}') else {
            return Err(
                "unclosed `${`: write `${VAR}` or `${VAR:-default}` (or `$$` for a literal `$`)"
                    .into(),
            );
        };
        let body = &body_and_rest[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{body}}}` is not a variable reference: names are letters, digits and `_`"
            ));
        }
        let value = match (lookup(name), default) {
            (Some(v), _) if !v.is_empty() => v,
            (_, Some(d)) => d.to_string(),
            (Some(v), None) => v,
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set: set it, or give a default with `${{{name}:-value}}`"
                ))
            }
        };
        out.push_str(&escape_basic(&value));
        rest = &body_and_rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn escape_basic(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "DATA" => Some("/data".into()),
            "EMPTY" => Some(String::new()),
            "QUOTE" => Some("a\"b\\c".into()),
            _ => None,
        }
    }

    #[test]
    fn set_variable_is_replaced() {
        assert_eq!(
            substitute("uri = \"${DATA}/t\"\n", env).unwrap(),
            "uri = \"/data/t\"\n"
        );
    }

    #[test]
    fn default_used_when_unset_or_empty() {
        assert_eq!(
            substitute("a = \"${NOPE:-x/y}\"", env).unwrap(),
            "a = \"x/y\""
        );
        assert_eq!(substitute("a = \"${EMPTY:-d}\"", env).unwrap(), "a = \"d\"");
        assert_eq!(
            substitute("a = \"${DATA:-d}\"", env).unwrap(),
            "a = \"/data\""
        );
    }

    #[test]
    fn unset_without_default_names_the_line() {
        let err = substitute("a = 1\nb = \"${NOPE}\"\n", env).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].0, 2);
        assert!(err[0].1.contains("NOPE is not set"), "{}", err[0].1);
    }

    #[test]
    fn values_are_escaped_and_dollar_dollar_is_literal() {
        assert_eq!(
            substitute("a = \"${QUOTE}\"", env).unwrap(),
            "a = \"a\\\"b\\\\c\""
        );
        assert_eq!(substitute("a = \"$$5 $x\"", env).unwrap(), "a = \"$5 $x\"");
    }

    #[test]
    fn comments_are_left_alone() {
        assert_eq!(substitute("# ${NOPE}\n", env).unwrap(), "# ${NOPE}\n");
    }
}
