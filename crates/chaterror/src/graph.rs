//! Walking an error graph: the `source()` chain plus the members of every [`JoinedError`],
//! depth-first, outermost first (spec/chaterror.md §2.4–§2.5).

use std::error::Error;

use crate::JoinedError;

/// The most nodes of an error graph examined: a `source()` chain that loops back on itself
/// must not hang the classifier.
const MAX_NODES: usize = 1024;

/// Every node of the graph rooted at `err`, depth-first, outermost first: a node, then (for a
/// [`JoinedError`]) each member's subgraph, then its source's subgraph.
pub(crate) fn nodes<'a>(err: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut out = Vec::new();
    let mut stack = vec![err];
    while let Some(node) = stack.pop() {
        if out.len() >= MAX_NODES {
            break;
        }
        out.push(node);
        // Push in reverse so that members come before the source, first member first.
        if let Some(source) = node.source() {
            stack.push(source);
        }
        if let Some(joined) = node.downcast_ref::<JoinedError>() {
            for member in joined.0.iter().rev() {
                stack.push(member.as_ref());
            }
        }
    }
    out
}

/// The first error of type `T` in the graph rooted at `err` (the `source()` chain and the
/// members of every [`JoinedError`]), outermost first.
///
/// ```
/// use chaterror::{Cancelled, JoinedError, find_in_graph};
///
/// let joined = JoinedError::new([Box::new(Cancelled { cause: None }) as chaterror::BoxError]);
/// assert!(find_in_graph::<Cancelled>(&joined).is_some());
/// ```
pub fn find_in_graph<'a, T: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a T> {
    find(&nodes(err))
}

/// The first node of type `T`, outermost first.
pub(crate) fn find<'a, T: Error + 'static>(nodes: &[&'a (dyn Error + 'static)]) -> Option<&'a T> {
    nodes.iter().find_map(|n| n.downcast_ref::<T>())
}

/// The "full text" of an error (spec/chaterror.md §2.5): its `Display`, then each source's
/// `Display` that is non-empty and not already a suffix of the text, separated by `": "`.
///
/// ```
/// let err = std::io::Error::other("connection reset");
/// assert_eq!(chaterror::full_text(&err), "connection reset");
/// ```
pub fn full_text(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    let mut depth = 0;
    while let Some(cause) = source {
        depth += 1;
        if depth > MAX_NODES {
            break;
        }
        let shown = cause.to_string();
        if !shown.is_empty() && !text.ends_with(&shown) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}
