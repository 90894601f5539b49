//! Page sizes and opaque page tokens of the admin, template and workspace list calls. A token
//! is a keyset position (the previous page's last row), never an offset into a moving list —
//! except for model configurations, whose order (default first) has no stable key.

use chrono::{DateTime, Utc};
use tonic::Status;
use uuid::Uuid;

/// Default and largest page sizes.
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

/// `page_size` of a request: 0 = 50, at most 200, negative refused.
pub(crate) fn page_size(requested: i32) -> Result<i64, Status> {
    match i64::from(requested) {
        n if n < 0 => Err(Status::invalid_argument(format!(
            "page_size {n} is negative"
        ))),
        0 => Ok(DEFAULT_PAGE),
        n => Ok(n.min(MAX_PAGE)),
    }
}

/// Cuts a page read with `limit + 1` rows down to `limit`, and returns the next page's token
/// (empty when this was the last page) from its last row.
pub(crate) fn finish_page<T>(
    mut rows: Vec<T>,
    limit: i64,
    token: impl Fn(&T) -> String,
) -> (Vec<T>, String) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = match rows.last() {
        Some(last) if more => token(last),
        _ => String::new(),
    };
    (rows, next)
}

fn bad_token() -> Status {
    Status::invalid_argument("page_token is not one this server handed out")
}

/// The token of a position in a by-name listing.
pub(crate) fn name_token(name: &str, id: Uuid) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("n1.{hex}.{}", id.simple())
}

/// Reads a [`name_token`]; `None` for an empty token (the first page).
pub(crate) fn parse_name_token(token: &str) -> Result<Option<(String, Uuid)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let (hex, id) = token
        .strip_prefix("n1.")
        .and_then(|t| t.split_once('.'))
        .ok_or_else(bad_token)?;
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad_token)?;
    let name = String::from_utf8(bytes).map_err(|_| bad_token())?;
    let id = Uuid::try_parse(id).map_err(|_| bad_token())?;
    Ok(Some((name, id)))
}

/// The token of a position in a newest-first listing.
pub(crate) fn time_token(at: DateTime<Utc>, id: Uuid) -> String {
    format!("t1.{}.{}", at.timestamp_micros(), id.simple())
}

/// Reads a [`time_token`]; `None` for an empty token (the first page).
pub(crate) fn parse_time_token(token: &str) -> Result<Option<(DateTime<Utc>, Uuid)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let (micros, id) = token
        .strip_prefix("t1.")
        .and_then(|t| t.split_once('.'))
        .ok_or_else(bad_token)?;
    let at = micros
        .parse()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad_token)?;
    let id = Uuid::try_parse(id).map_err(|_| bad_token())?;
    Ok(Some((at, id)))
}

/// The token of the page starting at `offset`.
pub(crate) fn offset_token(offset: i64) -> String {
    format!("o1.{offset}")
}

/// Reads an [`offset_token`]; 0 for an empty token.
pub(crate) fn parse_offset_token(token: &str) -> Result<i64, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .strip_prefix("o1.")
        .and_then(|n| n.parse().ok())
        .filter(|n: &i64| *n >= 0)
        .ok_or_else(bad_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let id = Uuid::new_v4();
        let name = "shell-ü.2";
        assert_eq!(
            parse_name_token(&name_token(name, id)).unwrap(),
            Some((name.to_owned(), id))
        );
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        assert_eq!(
            parse_time_token(&time_token(at, id)).unwrap(),
            Some((at, id))
        );
        assert_eq!(parse_offset_token(&offset_token(150)).unwrap(), 150);
        assert_eq!(parse_name_token("").unwrap(), None);
        assert_eq!(parse_time_token("").unwrap(), None);
        assert_eq!(parse_offset_token("").unwrap(), 0);
    }

    #[test]
    fn foreign_tokens_are_refused() {
        for token in ["x", "n1.zz.1", "n1.61", "t1.abc.x", "o1.-3", "c1.0.0.0"] {
            assert!(parse_name_token(token).is_err(), "{token}");
            assert!(parse_time_token(token).is_err(), "{token}");
            assert!(parse_offset_token(token).is_err(), "{token}");
        }
    }

    #[test]
    fn pages_are_cut_and_tokened() {
        let (rows, next) = finish_page(vec![1, 2, 3], 2, |n| format!("after {n}"));
        assert_eq!((rows, next.as_str()), (vec![1, 2], "after 2"));
        let (rows, next) = finish_page(vec![1, 2], 2, |n| format!("after {n}"));
        assert_eq!((rows, next.as_str()), (vec![1, 2], ""));
        assert_eq!(page_size(0).unwrap(), 50);
        assert_eq!(page_size(500).unwrap(), 200);
        assert!(page_size(-1).is_err());
    }
}
