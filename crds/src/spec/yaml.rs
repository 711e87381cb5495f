//! A YAML document tree that remembers the line of every node, so errors can point at it.
//!
//! Scalars are kept as their source text (`1.10` stays `1.10`, not the float 1.1), which is what
//! match specs and environment variables want.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A node of the document with its 1-based line.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The 1-based line the node starts on.
    pub line: usize,
    /// What the node holds.
    pub value: Value,
}

/// The content of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar's text; `null` and `~` and empty plain scalars are [`Value::Null`].
    Scalar(String),
    /// An empty value.
    Null,
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order (duplicates kept so they can be reported).
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// A short name of the kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "a string",
            Value::Null => "empty",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A YAML syntax error with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// The parser's message.
    pub message: String,
}

/// Parses one YAML document. An empty document is `Null` on line 1; a second document, an alias
/// or a tag other than the core ones is an error, as none belongs in an environment file.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        line: e.marker().line(),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    if builder.documents > 1 {
        return Err(SyntaxError {
            line: builder.second_document_line,
            message: "more than one YAML document".into(),
        });
    }
    Ok(builder.root.unwrap_or(Node {
        line: 1,
        value: Value::Null,
    }))
}

#[derive(Default)]
struct Builder {
    stack: Vec<Node>,
    root: Option<Node>,
    documents: usize,
    second_document_line: usize,
    error: Option<SyntaxError>,
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        match self.stack.last_mut() {
            Some(Node {
                value: Value::Seq(items),
                ..
            }) => items.push(node),
            Some(Node {
                value: Value::Map(entries),
                ..
            }) => {
                // A key is stored with a Null placeholder value until its value arrives.
                match entries.last_mut() {
                    Some((_, v)) if v.line == 0 => *v = node,
                    _ => entries.push((
                        node,
                        Node {
                            line: 0,
                            value: Value::Null,
                        },
                    )),
                }
            }
            _ => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
        }
    }

    fn fail(&mut self, line: usize, message: &str) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                line,
                message: message.to_string(),
            });
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line().max(1);
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents == 2 {
                    self.second_document_line = line;
                }
            }
            Event::Scalar(text, style, _, tag) => {
                if tag.as_ref().is_some_and(|t| t.handle != "!!") {
                    self.fail(line, "custom YAML tags are not supported");
                }
                let plain = matches!(style, yaml_rust2::scanner::TScalarStyle::Plain);
                let value = if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Value::Null
                } else {
                    Value::Scalar(text)
                };
                self.push_value(Node { line, value });
            }
            Event::SequenceStart(..) => self.stack.push(Node {
                line,
                value: Value::Seq(Vec::new()),
            }),
            Event::MappingStart(..) => self.stack.push(Node {
                line,
                value: Value::Map(Vec::new()),
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(node) = self.stack.pop() {
                    self.push_value(node);
                }
            }
            Event::Alias(_) => self.fail(line, "YAML aliases are not supported"),
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        let n = parse("a: 1\nb:\n  - x\n  - y\n").unwrap();
        let Value::Map(entries) = n.value else {
            panic!()
        };
        assert_eq!(entries[0].0.line, 1);
        assert_eq!(entries[1].0.line, 2);
        let Value::Seq(items) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(items[0].line, 3);
        assert_eq!(items[1].line, 4);
        assert_eq!(items[1].value, Value::Scalar("y".into()));
    }

    #[test]
    fn scalars_keep_source_text() {
        let n = parse("v: 1.10\n").unwrap();
        let Value::Map(entries) = n.value else {
            panic!()
        };
        assert_eq!(entries[0].1.value, Value::Scalar("1.10".into()));
    }

    #[test]
    fn empty_value_is_null() {
        let n = parse("a:\nb: ~\n").unwrap();
        let Value::Map(entries) = n.value else {
            panic!()
        };
        assert_eq!(entries[0].1.value, Value::Null);
        assert_eq!(entries[1].1.value, Value::Null);
    }

    #[test]
    fn syntax_error_has_line() {
        let err = parse("a: 1\nb: [x, y\nc: 2\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
    }

    #[test]
    fn aliases_are_rejected() {
        let err = parse("a: &x 1\nb: *x\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn second_document_is_rejected() {
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err.message, "more than one YAML document");
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(parse("").unwrap().value, Value::Null);
        assert_eq!(parse("# only a comment\n").unwrap().value, Value::Null);
    }
}
