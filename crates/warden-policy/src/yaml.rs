//! A small located YAML tree, built from serde-saphyr's parser events.
//!
//! Policies need the raw text and position of every node (for diagnostics),
//! and must fail fast on hostile input. The tree is built iteratively (no
//! recursion, so no stack overflow), with hard caps on size, depth and node
//! count, and anchors and aliases are refused outright: a policy has no use
//! for them and they are the vehicle of "billion laughs" expansion.

use serde_saphyr::granit_parser::{Event, Marker, Options, Parser, ScalarStyle};

use crate::policy::Location;

/// Largest policy source accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;
/// Deepest collection nesting accepted (the schema needs 2).
pub const MAX_DEPTH: usize = 8;
/// Most YAML nodes accepted in one policy.
pub const MAX_NODES: usize = 65_536;

/// A YAML node with the position where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Scalar, list or mapping.
    pub kind: NodeKind,
    /// Where the node starts (1-based line and column).
    pub location: Location,
}

/// What a [`Node`] holds.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar with its text; `plain` if it was unquoted.
    Scalar {
        /// The scalar's text.
        text: String,
        /// True if it was unquoted.
        plain: bool,
    },
    /// A list.
    Sequence(Vec<Node>),
    /// A mapping, its entries in source order (duplicates kept).
    Mapping(Vec<(Node, Node)>),
}

impl Node {
    /// A plain scalar that YAML reads as null (`~`, `null`, or nothing).
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// What kind of node this is, for messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "null",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Sequence(_) => "a list",
            NodeKind::Mapping(_) => "a mapping",
        }
    }
}

/// A YAML document that could not be turned into a tree.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    /// Where parsing stopped.
    pub location: Location,
    /// What is wrong, one line.
    pub message: String,
}

fn location(marker: &Marker) -> Location {
    Location {
        line: marker.line().max(1),
        column: marker.col().saturating_add(1),
    }
}

enum Frame {
    Sequence(Location, Vec<Node>),
    Mapping(Location, Vec<(Node, Node)>, Option<Node>),
}

/// Parses `source` into a tree; `Ok(None)` for a stream with no document.
pub fn parse(source: &str) -> Result<Option<Node>, YamlError> {
    let start = Location { line: 1, column: 1 };
    if source.len() > MAX_SOURCE_BYTES {
        return Err(YamlError {
            location: start,
            message: format!(
                "policy is too large ({} bytes; at most {MAX_SOURCE_BYTES})",
                source.len()
            ),
        });
    }
    let mut options = Options::default();
    options.set_emit_comments(false);
    // Backstops only: the tree builder refuses anything deeper than
    // MAX_DEPTH first, with a clearer message.
    options.flow_nesting_limit = 64;
    options.block_nesting_limit = 64;
    let parser = Parser::new_from_str_with_options(source, options);

    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    let mut nodes = 0usize;

    for item in parser {
        let (event, span) = item.map_err(|e| YamlError {
            location: location(e.marker()),
            message: format!("invalid YAML: {}", e.info().replace('\n', " ")),
        })?;
        let at = location(&span.start);
        let fail = |message: String| {
            Err(YamlError {
                location: at,
                message,
            })
        };
        let anchored = match &event {
            Event::Scalar(_, _, anchor, _)
            | Event::SequenceStart(_, anchor, _)
            | Event::MappingStart(_, anchor, _) => *anchor != 0,
            _ => false,
        };
        if anchored {
            return fail("YAML anchors and aliases are not allowed in a policy".to_owned());
        }
        let complete = match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return fail("a policy must be a single YAML document".to_owned());
                }
                None
            }
            Event::Alias(_) | Event::UnresolvedAlias(_) | Event::Anchor(..) => {
                return fail("YAML anchors and aliases are not allowed in a policy".to_owned());
            }
            Event::Scalar(text, style, _, _) => Some(Node {
                kind: NodeKind::Scalar {
                    text: text.into_owned(),
                    plain: style == ScalarStyle::Plain,
                },
                location: at,
            }),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return fail(format!(
                        "YAML nesting is deeper than a policy needs (at most {MAX_DEPTH} levels)"
                    ));
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Sequence(at, Vec::new())
                } else {
                    Frame::Mapping(at, Vec::new(), None)
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Sequence(location, items)) => Some(Node {
                    kind: NodeKind::Sequence(items),
                    location,
                }),
                Some(Frame::Mapping(location, entries, _)) => Some(Node {
                    kind: NodeKind::Mapping(entries),
                    location,
                }),
                None => return fail("invalid YAML: unbalanced collection end".to_owned()),
            },
            _ => None,
        };
        let Some(node) = complete else { continue };
        nodes += 1;
        if nodes > MAX_NODES {
            return fail(format!(
                "policy has too many YAML nodes (at most {MAX_NODES})"
            ));
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Sequence(_, items)) => items.push(node),
            Some(Frame::Mapping(_, entries, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str, line: usize, column: usize) -> Node {
        Node {
            kind: NodeKind::Scalar {
                text: text.to_owned(),
                plain: true,
            },
            location: Location { line, column },
        }
    }

    #[test]
    fn builds_located_tree() {
        let tree = parse("a: 1\nb:\n  - x\n").unwrap().unwrap();
        let NodeKind::Mapping(entries) = tree.kind else {
            panic!("not a mapping")
        };
        assert_eq!(entries[0], (scalar("a", 1, 1), scalar("1", 1, 4)));
        assert_eq!(entries[1].0, scalar("b", 2, 1));
        assert_eq!(
            entries[1].1.kind,
            NodeKind::Sequence(vec![scalar("x", 3, 5)])
        );
    }

    #[test]
    fn empty_stream_has_no_root() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("# only a comment\n"), Ok(None));
    }

    #[test]
    fn refuses_hostile_input() {
        let err = parse("a: &x [1]\nb: *x\n").unwrap_err();
        assert_eq!(err.location, Location { line: 1, column: 7 });
        assert!(
            err.message.contains("anchors and aliases"),
            "{}",
            err.message
        );
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(&deep)
            .unwrap_err()
            .message
            .contains("recursion limit"));
        let nested = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(parse(&nested)
            .unwrap_err()
            .message
            .contains("nesting is deeper"));
        let deep_block = "- ".repeat(100_000);
        assert!(parse(&deep_block).is_err());
        let big = "#".repeat(MAX_SOURCE_BYTES + 1);
        assert!(parse(&big).unwrap_err().message.contains("too large"));
        assert!(parse("a\n---\nb\n")
            .unwrap_err()
            .message
            .contains("single YAML document"));
    }

    #[test]
    fn syntax_errors_carry_the_parser_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.message.starts_with("invalid YAML: "), "{}", err.message);
        assert!(err.location.line >= 1);
    }
}
