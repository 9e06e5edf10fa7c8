//! The graph of a folder of pipelines: upstream tables → pipelines → link tables, with
//! lookup-only tables dashed and disabled pipelines greyed, as Graphviz DOT or Mermaid;
//! with their status, each pipeline coloured by its health and lag.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::config::Pipeline;
use crate::status::PipelineStatus;

/// A pipeline's health as the graph colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Every upstream done up to its latest version.
    UpToDate,
    /// Some upstream has versions to do.
    Lagging,
    /// Its link table or an upstream cannot be read.
    Failing,
}

impl Health {
    /// The health a status shows, and the line the graph adds to the pipeline's label.
    pub fn of(s: &PipelineStatus) -> (Health, String) {
        let failing = s
            .error
            .as_ref()
            .or_else(|| s.upstreams.iter().find_map(|u| u.error.as_ref()));
        if let Some(e) = failing {
            let first = e.lines().next().unwrap_or_default();
            let short: String = first.chars().take(60).collect();
            return (Health::Failing, format!("cannot be read: {short}"));
        }
        let lag: i64 = s.upstreams.iter().filter_map(|u| u.lag_versions).sum();
        let batch = format!("batch {}", s.last_batch);
        if lag > 0 {
            (Health::Lagging, format!("{batch}, {lag} versions to do"))
        } else {
            (Health::UpToDate, format!("{batch}, up to date"))
        }
    }

    /// Fill and border colours (DOT and Mermaid).
    fn colours(self) -> (&'static str, &'static str) {
        match self {
            Health::UpToDate => ("#d4edda", "#2e7d32"),
            Health::Lagging => ("#fff3cd", "#b7791f"),
            Health::Failing => ("#f8d7da", "#c62828"),
        }
    }

    fn class(self) -> &'static str {
        match self {
            Health::UpToDate => "uptodate",
            Health::Lagging => "lagging",
            Health::Failing => "failing",
        }
    }
}

/// Each pipeline's health and label line, by name, from their statuses.
fn healths(statuses: &[PipelineStatus]) -> BTreeMap<&str, (Health, String)> {
    statuses
        .iter()
        .map(|s| (s.pipeline.as_str(), Health::of(s)))
        .collect()
}

/// Graphviz DOT (`dot -Tsvg`).
pub fn dot(pipelines: &[Pipeline]) -> String {
    dot_with_status(pipelines, &[])
}

/// [`dot`] with each pipeline whose status is given coloured by its health (green up
/// to date, amber lagging, red failing), its last batch and lag in its label.
pub fn dot_with_status(pipelines: &[Pipeline], statuses: &[PipelineStatus]) -> String {
    let health = healths(statuses);
    let mut out = String::from(
        "digraph dlink {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\"];\n",
    );
    for t in tables(pipelines) {
        let _ = writeln!(
            out,
            "  {} [label={}, shape=cylinder];",
            quote(&format!("table:{t}")),
            quote(&t)
        );
    }
    for p in pipelines {
        let (id, link) = (
            quote(&format!("pipeline:{}", p.name)),
            quote(&format!("link:{}", p.name)),
        );
        let grey = if p.enabled {
            ""
        } else {
            ", style=filled, fillcolor=\"#eeeeee\", color=\"#999999\", fontcolor=\"#999999\""
        };
        let edge_grey = if p.enabled { "" } else { " color=\"#999999\"" };
        let mut label = if p.enabled {
            p.name.clone()
        } else {
            format!("{} (disabled)", p.name)
        };
        let mut style = grey.to_string();
        if let Some((h, line)) = health.get(p.name.as_str()) {
            let _ = write!(label, "\n{line}");
            if p.enabled {
                let (fill, border) = h.colours();
                style = format!(", style=filled, fillcolor=\"{fill}\", color=\"{border}\"");
            }
        }
        let _ = writeln!(out, "  {id} [label={}, shape=box{style}];", quote(&label));
        let _ = writeln!(
            out,
            "  {link} [label={}, shape=folder{grey}];",
            quote(&format!("link table\n{}", p.link_uri))
        );
        for u in &p.upstreams {
            let _ = writeln!(
                out,
                "  {} -> {id} [{}];",
                quote(&format!("table:{}", u.name)),
                edge_grey.trim()
            );
        }
        for u in &p.lookups {
            let _ = writeln!(
                out,
                "  {} -> {id} [style=dashed, label=\"lookup\"{edge_grey}];",
                quote(&format!("table:{}", u.name)),
            );
        }
        let _ = writeln!(out, "  {id} -> {link} [{}];", edge_grey.trim());
    }
    out.push_str("}\n");
    out
}

/// Mermaid (`flowchart LR`), for Markdown pages that render it.
pub fn mermaid(pipelines: &[Pipeline]) -> String {
    mermaid_with_status(pipelines, &[])
}

/// [`mermaid`] with each pipeline whose status is given in a class by its health
/// (`uptodate`, `lagging`, `failing`), its last batch and lag in its label.
pub fn mermaid_with_status(pipelines: &[Pipeline], statuses: &[PipelineStatus]) -> String {
    let health = healths(statuses);
    let mut classes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut out = String::from("flowchart LR\n");
    for t in tables(pipelines) {
        let _ = writeln!(out, "  {}[({})]", id("t", &t), label(&t));
    }
    let mut disabled = Vec::new();
    for p in pipelines {
        let (pid, lid) = (id("p", &p.name), id("l", &p.name));
        let text = match health.get(p.name.as_str()) {
            Some((h, line)) => {
                if p.enabled {
                    classes.entry(h.class()).or_default().push(pid.clone());
                }
                format!("{}<br/>{line}", p.name)
            }
            None => p.name.clone(),
        };
        let _ = writeln!(out, "  {pid}[{}]", label(&text));
        let _ = writeln!(
            out,
            "  {lid}[/{}/]",
            label(&format!("link table {}", p.link_uri))
        );
        for u in &p.upstreams {
            let _ = writeln!(out, "  {} --> {pid}", id("t", &u.name));
        }
        for u in &p.lookups {
            let _ = writeln!(out, "  {} -. lookup .-> {pid}", id("t", &u.name));
        }
        let _ = writeln!(out, "  {pid} --> {lid}");
        if !p.enabled {
            disabled.extend([pid, lid]);
        }
    }
    if !disabled.is_empty() {
        out.push_str("  classDef disabled fill:#eeeeee,stroke:#999999,color:#999999\n");
        let _ = writeln!(out, "  class {} disabled", disabled.join(","));
    }
    for h in [Health::UpToDate, Health::Lagging, Health::Failing] {
        if let Some(ids) = classes.get(h.class()) {
            let (fill, border) = h.colours();
            let _ = writeln!(out, "  classDef {} fill:{fill},stroke:{border}", h.class());
            let _ = writeln!(out, "  class {} {}", ids.join(","), h.class());
        }
    }
    out
}

/// Every table the pipelines read, once, by name.
fn tables(pipelines: &[Pipeline]) -> BTreeSet<String> {
    pipelines
        .iter()
        .flat_map(|p| p.upstreams.iter().chain(&p.lookups))
        .map(|u| u.name.clone())
        .collect()
}

/// A DOT string literal.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            // DOT's line break in a label.
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// A Mermaid node id: the kind and the name with every other character as `_` and a
/// hash of the name (so `a-b` and `a_b` stay apart).
fn id(kind: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("{kind}_{clean}_{:06x}", hash & 0xff_ffff)
}

/// A Mermaid label in quotes (`"` as `#quot;`).
fn label(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "#quot;"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_ids_are_safe() {
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(quote("c:\\x\ny"), "\"c:\\\\x\\ny\"");
        assert_ne!(id("t", "a-b"), id("t", "a_b"));
        assert!(id("p", "x y!").starts_with("p_x_y__"));
        assert_eq!(label("say \"hi\""), "\"say #quot;hi#quot;\"");
    }
}
