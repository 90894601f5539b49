/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL could not be parsed.
    #[error("invalid database URL")]
    InvalidUrl(#[source] sqlx::Error),
    /// Connecting to the database failed.
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    /// Applying the migrations failed.
    #[error("applying database migrations failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
}
