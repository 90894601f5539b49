//! SQL helpers every domain module of the backend uses.

/// `%query%` for `ILIKE … ESCAPE '\'`, with the query's own wildcards escaped.
pub(super) fn like_pattern(query: &str) -> String {
    format!(
        "%{}%",
        query
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

/// Whether `err` is a violation of a unique index.
pub(super) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// Whether `err` is a violated CHECK constraint.
pub(super) fn is_check_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23514"))
}
