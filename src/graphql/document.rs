//! A parsed GraphQL document and what the pipeline needs to know of each
//! of its operations, worked out once when the document is parsed (and kept
//! with it in the document cache):
//! - its type and its root fields (fragments expanded, aliases counted), for
//!   the root-field bound, account restrictions and GET's "queries only";
//! - its depth outside introspection, for `GRAPHQL_MAX_DEPTH`;
//! - whether it introspects, and how deeply introspection nests the lists
//!   that fan out (`fields`, `inputFields`, `interfaces`, `possibleTypes`),
//!   the bound graphql-js applies (`MaxIntrospectionDepthRule`): the
//!   standard introspection query nests `ofType` nine levels deep but those
//!   lists only once, while a hostile one nests them to blow up the answer.
//!
//! async-graphql bounds breadth nowhere (5,000 aliases of a cheap field
//! are 5,000 resolver calls) and counts introspection in its depth bound,
//! which is why both are here.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, FragmentDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{Name, Positioned};

use crate::error::AppError;

/// The introspection fields that fan out to a list of types or fields.
const FAN_OUT: &[&str] = &["fields", "inputFields", "interfaces", "possibleTypes"];
/// How deeply those lists may nest (graphql-js's bound).
pub const MAX_INTROSPECTION_LISTS: usize = 3;

/// A parsed document with its operations' facts.
pub struct Document {
    pub doc: ExecutableDocument,
    /// The length of the text it was parsed from.
    pub source_len: usize,
    operations: Vec<Operation>,
}

/// What the pipeline checks of one operation.
#[derive(Debug)]
pub struct Operation {
    pub name: Option<String>,
    pub kind: OperationType,
    /// Root fields by name (not alias), each once.
    pub root_fields: Vec<String>,
    /// Root fields as selected: aliases and fragment repeats counted.
    pub root_selections: usize,
    /// The deepest field outside introspection (a root field is depth 1).
    pub depth: usize,
    /// Selects `__schema` or `__type`.
    pub introspects: bool,
    /// The deepest nesting of fan-out lists inside introspection.
    pub introspection_lists: usize,
}

impl Operation {
    pub fn kind_label(&self) -> &'static str {
        match self.kind {
            OperationType::Query => "query",
            OperationType::Mutation => "mutation",
            OperationType::Subscription => "subscription",
        }
    }
}

type Fragments = HashMap<Name, Positioned<FragmentDefinition>>;

impl Document {
    /// Parses `query`; the parser's message on failure.
    pub fn parse(query: &str) -> Result<Self, String> {
        let doc = async_graphql::parser::parse_query(query).map_err(|e| e.to_string())?;
        let operations = doc
            .operations
            .iter()
            .map(|(name, op)| {
                let mut facts = Facts::default();
                let set = &op.node.selection_set.node;
                walk(
                    set,
                    &doc.fragments,
                    &mut HashSet::new(),
                    1,
                    None,
                    &mut facts,
                );
                let mut root_fields = facts.root_fields;
                root_fields.sort();
                root_fields.dedup();
                Operation {
                    name: name.map(|n| n.to_string()),
                    kind: op.node.ty,
                    root_fields,
                    root_selections: facts.root_selections,
                    depth: facts.depth,
                    introspects: facts.introspects,
                    introspection_lists: facts.introspection_lists,
                }
            })
            .collect();
        Ok(Self {
            doc,
            source_len: query.len(),
            operations,
        })
    }

    /// The operation a request runs: the named one, or the only one. The
    /// same choice async-graphql makes, with the same refusals.
    pub fn operation(&self, wanted: Option<&str>) -> Result<&Operation, AppError> {
        let found = match (&self.doc.operations, wanted) {
            (DocumentOperations::Single(_), None) => self.operations.first(),
            (DocumentOperations::Multiple(_), Some(name)) => self
                .operations
                .iter()
                .find(|op| op.name.as_deref() == Some(name)),
            (DocumentOperations::Multiple(_), None) if self.operations.len() == 1 => {
                self.operations.first()
            }
            (DocumentOperations::Multiple(_), None) => {
                return Err(AppError::bad_input(
                    "operationName",
                    "the document has several operations: name the one to run in operationName",
                ));
            }
            // An anonymous operation has no name to choose it by.
            (DocumentOperations::Single(_), Some(_)) => None,
        };
        found.ok_or_else(|| {
            AppError::bad_input(
                "operationName",
                format!(
                    "the document has no operation named {:?}",
                    wanted.unwrap_or_default()
                ),
            )
        })
    }
}

#[derive(Default)]
struct Facts {
    root_fields: Vec<String>,
    root_selections: usize,
    depth: usize,
    introspects: bool,
    introspection_lists: usize,
}

/// Visits the fields of `set` at `depth`, fragments inlined (each at most
/// once per path, so a cycle cannot loop). `lists` is `Some(n)` inside
/// introspection, with `n` fan-out lists above.
fn walk(
    set: &SelectionSet,
    fragments: &Fragments,
    seen: &mut HashSet<Name>,
    depth: usize,
    lists: Option<usize>,
    facts: &mut Facts,
) {
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => {
                let field = &field.node;
                let name = field.name.node.as_str();
                let lists = match lists {
                    None if depth == 1 && matches!(name, "__schema" | "__type") => {
                        facts.introspects = true;
                        Some(0)
                    }
                    Some(n) if FAN_OUT.contains(&name) => Some(n + 1),
                    other => other,
                };
                match lists {
                    Some(n) => facts.introspection_lists = facts.introspection_lists.max(n),
                    None => facts.depth = facts.depth.max(depth),
                }
                if depth == 1 {
                    facts.root_selections += 1;
                    facts.root_fields.push(name.to_string());
                }
                let set = &field.selection_set.node;
                walk(set, fragments, seen, depth + 1, lists, facts);
            }
            Selection::InlineFragment(f) => {
                let set = &f.node.selection_set.node;
                walk(set, fragments, seen, depth, lists, facts);
            }
            Selection::FragmentSpread(s) => {
                let name = &s.node.fragment_name.node;
                // Each fragment at most once per path.
                if let Some(f) = fragments.get(name).filter(|_| seen.insert(name.clone())) {
                    let set = &f.node.selection_set.node;
                    walk(set, fragments, seen, depth, lists, facts);
                    seen.remove(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Document;

    fn op(query: &str) -> super::Operation {
        let doc = Document::parse(query).expect("parses");
        let mut ops = doc.operations;
        ops.remove(0)
    }

    #[test]
    fn root_fields_count_aliases_and_fragments_and_name_each_field_once() {
        let o = op(
            "query Q { a: me { id } b: me { id } ...F } fragment F on Query { health { status } }",
        );
        assert_eq!(o.root_selections, 3);
        assert_eq!(o.root_fields, vec!["health", "me"]);
        assert_eq!(o.depth, 2);
        assert!(!o.introspects);
    }

    #[test]
    fn introspection_is_measured_apart_from_the_depth() {
        let o = op(
            "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { name } } } } } } } } me { id } }",
        );
        assert!(o.introspects);
        assert_eq!(o.depth, 2, "only `me {{ id }}` counts");
        assert_eq!(o.introspection_lists, 1);
        let hostile = op(
            "{ __schema { types { fields { type { fields { type { fields { type { fields { name } } } } } } } } } }",
        );
        assert_eq!(hostile.introspection_lists, 4);
    }

    #[test]
    fn a_fragment_cycle_does_not_loop() {
        let o = op("{ ...A } fragment A on Query { me { id } ...B } fragment B on Query { ...A }");
        assert_eq!(o.root_fields, vec!["me"]);
    }

    #[test]
    fn the_operation_is_chosen_as_async_graphql_chooses_it() {
        let doc =
            Document::parse("query A { me { id } } mutation B { logout(refreshToken: \"x\") }")
                .expect("parses");
        assert!(doc.operation(None).is_err());
        assert_eq!(
            doc.operation(Some("B")).expect("B").kind_label(),
            "mutation"
        );
        assert!(doc.operation(Some("C")).is_err());
        let anonymous = Document::parse("{ me { id } }").expect("parses");
        assert!(anonymous.operation(None).is_ok());
        assert!(anonymous.operation(Some("A")).is_err());
    }
}
