//! A bound on root fields per operation: async-graphql bounds depth and
//! complexity, not breadth, and 5,000 aliases of one cheap field make one
//! request do 5,000 resolver calls.

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{
    ExecutableDocument, FragmentDefinition, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned, ServerError, ServerResult, Variables};
use std::collections::HashMap;

/// Refuses an operation whose root selection holds more than `max` fields,
/// aliases and fields reached through fragments included.
pub struct MaxRootFields(pub usize);

impl ExtensionFactory for MaxRootFields {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(MaxRootFieldsExtension(self.0))
    }
}

struct MaxRootFieldsExtension(usize);

/// Fields a selection set selects at its own level, fragments expanded
/// (each fragment once per path, so a cycle cannot loop).
fn count(
    set: &SelectionSet,
    fragments: &HashMap<Name, Positioned<FragmentDefinition>>,
    seen: &mut HashSet<Name>,
) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(_) => 1,
            Selection::InlineFragment(f) => count(&f.node.selection_set.node, fragments, seen),
            Selection::FragmentSpread(s) => {
                let name = s.node.fragment_name.node.clone();
                match fragments.get(&name) {
                    Some(f) if seen.insert(name.clone()) => {
                        let n = count(&f.node.selection_set.node, fragments, seen);
                        seen.remove(&name);
                        n
                    }
                    _ => 0,
                }
            }
        })
        .sum()
}

#[async_trait::async_trait]
impl Extension for MaxRootFieldsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        match root_fields_error(&doc, self.0) {
            Some(err) => Err(err),
            None => Ok(doc),
        }
    }
}

/// The error for the first operation of `doc` that selects more than `max`
/// root fields, if any.
pub fn root_fields_error(doc: &ExecutableDocument, max: usize) -> Option<ServerError> {
    for (name, op) in doc.operations.iter() {
        let n = count(
            &op.node.selection_set.node,
            &doc.fragments,
            &mut HashSet::new(),
        );
        if n > max {
            let which = name.map(|n| format!(" {n}")).unwrap_or_default();
            return Some(ServerError::new(
                format!(
                    "operation{which} selects {n} root fields (aliases included); at most {max} are allowed (GRAPHQL_MAX_ROOT_FIELDS)"
                ),
                Some(op.pos),
            ));
        }
    }
    None
}
