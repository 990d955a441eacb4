//! Versioned schema migrations, compiled into the binary and applied once per database.

use deadpool_postgres::Client;

use super::PgError;

/// Every migration this binary knows: version, name, SQL. Versions are 1, 2, 3, ... in
/// order; an applied migration is never edited (the next change is the next file).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "cluster", include_str!("migrations/0001_cluster.sql")),
    (
        2,
        "cancels_and_email_retries",
        include_str!("migrations/0002_cancels_and_email_retries.sql"),
    ),
    (
        3,
        "account_versions",
        include_str!("migrations/0003_account_versions.sql"),
    ),
    (
        4,
        "wallet_change_function",
        include_str!("migrations/0004_wallet_change_function.sql"),
    ),
    (
        5,
        "saga_trace",
        include_str!("migrations/0005_saga_trace.sql"),
    ),
    (
        6,
        "saga_write_indexes",
        include_str!("migrations/0006_saga_write_indexes.sql"),
    ),
];

/// The advisory lock key every migrating node takes ("wayfare" in ASCII, as an i64).
const MIGRATION_LOCK: i64 = 0x77_61_79_66_61_72_65;

/// What one [`migrate`] call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Versions this call applied, in order (empty when the schema was current).
    pub applied: Vec<i32>,
    /// The schema version now.
    pub version: i32,
}

/// Applies the missing migrations in one transaction that first takes a transaction-scoped
/// advisory lock: nodes starting together queue on the lock, the first applies, the others
/// find the schema current and apply nothing. A database migrated by a newer binary is
/// refused ([`PgError::SchemaTooNew`]).
pub async fn migrate(client: &mut Client) -> Result<Migrated, PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // Looked up rather than `CREATE TABLE IF NOT EXISTS`, whose notice every later start
    // would log; the lock makes the look and the create one step.
    let exists: bool = tx
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        tx.batch_execute(
            "CREATE TABLE schema_migrations (
                 version     integer PRIMARY KEY,
                 name        text NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    }
    let found: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if found > known {
        return Err(PgError::SchemaTooNew { found, known });
    }
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        tx.batch_execute(sql).await.map_err(|e| {
            PgError::Statement(format!(
                "migration {version} ({name}) failed: {}",
                PgError::from(e)
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        applied.push(*version);
    }
    tx.commit().await?;
    Ok(Migrated {
        applied,
        version: known,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one() {
        for (i, (version, name, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i32 + 1, "{name}");
            assert!(!sql.trim().is_empty(), "{name}");
        }
    }
}
