//! What both SQL adapters' migrations can fail with.

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The database was migrated by a newer binary; running old code on it could corrupt it.
    #[error("database schema version {found} is newer than this binary supports ({supported}); upgrade stockorder")]
    TooNew {
        /// Version found in the database.
        found: usize,
        /// Newest version this binary knows.
        supported: usize,
    },
    /// The database holds another application's tables and no stockorder schema: migrating it
    /// would mix orders into someone else's data. Nothing was changed.
    #[error(
        "the database belongs to another application (it has tables {tables} and no stockorder schema); point DATABASE_URL at a new file"
    )]
    Foreign {
        /// The tables found, comma-separated.
        tables: String,
    },
    /// The database refused a rewrite of the schema that every binary reads the same, made
    /// outside the numbered migrations (see the SQLite adapter's `schema`).
    #[error("rewriting {what} failed: {source}")]
    Rewrite {
        /// What was being rewritten.
        what: &'static str,
        /// What the database said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database refused a migration.
    #[error("migration {version} failed: {source}")]
    Failed {
        /// The migration that failed (0: reading the version).
        version: usize,
        /// What the database said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl MigrationError {
    /// A `map_err` for the errors of migration `version`.
    pub(crate) fn failed<E: std::error::Error + Send + Sync + 'static>(version: usize) -> impl Fn(E) -> Self {
        move |source| MigrationError::Failed {
            version,
            source: Box::new(source),
        }
    }
}
