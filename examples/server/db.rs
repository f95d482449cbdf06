//! The demo's store: one table of versioned resources, on SQLite (embedded, the default) or
//! PostgreSQL (`--database-url postgres://…`, so several server processes can share it).
//!
//! Every write is a compare-and-swap on the entity tag the conditional layer validated:
//! `conditional_update` reports `Success`, `VersionMismatch { expected, current }` or
//! `NotFound`, as in the seed design's SCIM concurrency chapter. Each row also carries an
//! optional `unique_name` (a SCIM User's `userName`, lowercased) that the store keeps unique
//! per kind, so that two processes cannot create the same user twice.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower_conditional::EntityTag;

/// One stored resource: the exact representation bytes, and its validators.
#[derive(Debug, Clone)]
pub struct Row {
    pub doc: Vec<u8>,
    pub content_type: String,
    pub version: i64,
    pub etag: String,
    /// Unix seconds.
    pub last_modified: i64,
}

impl Row {
    pub fn last_modified(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.last_modified.max(0) as u64)
    }
}

/// What a conditional write did.
#[derive(Debug)]
pub enum Outcome {
    Success {
        row: Row,
        created: bool,
    },
    /// The stored tag was not the one the write was validated against.
    VersionMismatch {
        expected: String,
        current: String,
    },
    NotFound,
    /// A create-only write found the resource already there.
    Exists {
        current: String,
    },
    /// Another resource of the same kind already has this `unique_name`.
    Conflict,
}

/// The new state a write stores: the exact bytes, their tag, and what must stay unique.
#[derive(Debug, Clone)]
pub struct NewDoc {
    pub doc: Vec<u8>,
    pub content_type: String,
    pub etag: String,
    pub unique_name: Option<String>,
    /// Unix seconds.
    pub last_modified: i64,
}

impl NewDoc {
    /// Bytes stored as sent, tagged with the strong tag a GET of them would get from the
    /// layer (`EntityTag::from_content`), so the layer keeps the tag instead of hashing again.
    pub fn strong(doc: Vec<u8>, content_type: &str) -> NewDoc {
        NewDoc {
            etag: header_form(&EntityTag::from_content(&doc)),
            doc,
            content_type: content_type.to_owned(),
            unique_name: None,
            last_modified: now(),
        }
    }

    /// A SCIM resource: a *weak* tag of the stored bytes. The representation sent is these
    /// bytes plus `meta.location` and `meta.version`, and it may be trimmed by `attributes`:
    /// many byte sequences, one version — which is what a weak validator stands for.
    pub fn weak(
        doc: Vec<u8>,
        content_type: &str,
        unique_name: Option<String>,
        last_modified: i64,
    ) -> NewDoc {
        use base64::Engine as _;
        use sha2::Digest as _;
        let opaque =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&doc));
        let etag = EntityTag::weak(&opaque).expect("base64url is a valid opaque tag");
        NewDoc {
            etag: header_form(&etag),
            doc,
            content_type: content_type.to_owned(),
            unique_name,
            last_modified,
        }
    }
}

/// A tag as stored and sent: `"…"` or `W/"…"`.
pub fn header_form(tag: &EntityTag) -> String {
    let value = tag.to_header_value();
    value.to_str().expect("tags made here are ASCII").to_owned()
}

/// A stored tag as an `EntityTag` (`None` if it is not one).
pub fn entity_tag(stored: &str) -> Option<EntityTag> {
    match stored.strip_prefix("W/") {
        Some(weak) => EntityTag::weak(weak.strip_prefix('"')?.strip_suffix('"')?).ok(),
        None => EntityTag::strong(stored.strip_prefix('"')?.strip_suffix('"')?).ok(),
    }
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// Nothing: an unconditional write.
    Anything,
    /// The resource exists (with any tag).
    Exists,
    /// The resource exists with this tag.
    Tag(&'a str),
    /// The resource does not exist (create-only).
    Absent,
}

#[derive(Clone)]
pub enum Db {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(Arc<tokio_postgres::Client>),
}

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The current time in Unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The one table. `unique_name` is NULL for resources with nothing unique but their id
/// (NULLs never collide in a UNIQUE constraint, in SQLite and PostgreSQL alike).
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    unique_name TEXT,
    doc BYTEA NOT NULL,
    content_type TEXT NOT NULL,
    version BIGINT NOT NULL,
    etag TEXT NOT NULL,
    last_modified BIGINT NOT NULL,
    PRIMARY KEY (kind, id),
    UNIQUE (kind, unique_name)
)";

impl Db {
    /// Opens `postgres://…` URLs with tokio-postgres, anything else as a SQLite file path.
    pub async fn open(target: &str) -> Result<Db, Error> {
        if target.starts_with("postgres://") || target.starts_with("postgresql://") {
            let (client, connection) =
                tokio_postgres::connect(target, tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    eprintln!("postgres connection closed: {e}");
                }
            });
            client.batch_execute(SCHEMA).await?;
            Ok(Db::Postgres(Arc::new(client)))
        } else {
            let conn = rusqlite::Connection::open(target)?;
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.execute_batch(&format!(
                "PRAGMA journal_mode=WAL; {};",
                SCHEMA.replace("BYTEA", "BLOB")
            ))?;
            Ok(Db::Sqlite(Arc::new(Mutex::new(conn))))
        }
    }

    /// Runs `f` on the SQLite connection off the async threads.
    async fn sqlite<T: Send + 'static>(
        conn: &Arc<Mutex<rusqlite::Connection>>,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let conn = conn.clone();
        let result = tokio::task::spawn_blocking(move || {
            f(&mut conn.lock().unwrap_or_else(|p| p.into_inner()))
        })
        .await?;
        Ok(result?)
    }

    pub async fn get(&self, kind: &str, id: &str) -> Result<Option<Row>, Error> {
        let (kind, id) = (kind.to_owned(), id.to_owned());
        match self {
            Db::Sqlite(conn) => Self::sqlite(conn, move |c| sqlite_get(c, &kind, &id)).await,
            Db::Postgres(client) => {
                let row = client
                    .query_opt(
                        "SELECT doc, content_type, version, etag, last_modified FROM documents WHERE kind = $1 AND id = $2",
                        &[&kind, &id],
                    )
                    .await?;
                Ok(row.map(|r| pg_row(&r)))
            }
        }
    }

    pub async fn list(&self, kind: &str) -> Result<Vec<Row>, Error> {
        let kind = kind.to_owned();
        match self {
            Db::Sqlite(conn) => {
                Self::sqlite(conn, move |c| {
                    let mut stmt = c.prepare(
                        "SELECT doc, content_type, version, etag, last_modified FROM documents WHERE kind = ?1 ORDER BY id",
                    )?;
                    let rows = stmt.query_map([&kind], sqlite_row)?.collect::<Result<Vec<_>, _>>()?;
                    Ok(rows)
                })
                .await
            }
            Db::Postgres(client) => {
                let rows = client
                    .query(
                        "SELECT doc, content_type, version, etag, last_modified FROM documents WHERE kind = $1 ORDER BY id",
                        &[&kind],
                    )
                    .await?;
                Ok(rows.iter().map(pg_row).collect())
            }
        }
    }

    /// The write: store `new` for (kind, id) if the stored state is what `expect` says, in
    /// one transaction (SQLite) or one statement (PostgreSQL), so that of many writers
    /// holding the same tag exactly one succeeds. A `unique_name` already used by another
    /// resource of the kind is `Outcome::Conflict`, decided by the store's UNIQUE constraint.
    pub async fn conditional_update(
        &self,
        kind: &str,
        id: &str,
        expect: Expect<'_>,
        new: NewDoc,
    ) -> Result<Outcome, Error> {
        let NewDoc {
            doc,
            content_type,
            etag,
            unique_name,
            last_modified: stamp,
        } = new;
        match self {
            Db::Sqlite(conn) => {
                let (kind, id) = (kind.to_owned(), id.to_owned());
                let expect = OwnedExpect::from(expect);
                Self::sqlite(conn, move |c| {
                    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let current = sqlite_get(&tx, &kind, &id)?;
                    if let Some(outcome) = expect.refuse(current.as_ref()) {
                        return Ok(outcome);
                    }
                    let version = current.as_ref().map_or(1, |r| r.version + 1);
                    let written = tx.execute(
                        "INSERT INTO documents (kind, id, unique_name, doc, content_type, version, etag, last_modified)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                         ON CONFLICT (kind, id) DO UPDATE SET unique_name = excluded.unique_name, doc = excluded.doc,
                           content_type = excluded.content_type, version = excluded.version, etag = excluded.etag,
                           last_modified = excluded.last_modified",
                        rusqlite::params![kind, id, unique_name, doc, content_type, version, etag, stamp],
                    );
                    match written {
                        // The only constraint left to violate: (kind, unique_name).
                        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
                            return Ok(Outcome::Conflict)
                        }
                        other => other?,
                    };
                    tx.commit()?;
                    let row = Row { doc, content_type, version, etag, last_modified: stamp };
                    Ok(Outcome::Success { row, created: current.is_none() })
                })
                .await
            }
            Db::Postgres(client) => {
                let kind_s = kind.to_owned();
                let id_s = id.to_owned();
                let changed = match expect {
                    Expect::Absent => {
                        client
                            .query_opt(
                                "INSERT INTO documents (kind, id, unique_name, doc, content_type, version, etag, last_modified)
                                 VALUES ($1, $2, $3, $4, $5, 1, $6, $7) ON CONFLICT (kind, id) DO NOTHING RETURNING version",
                                &[&kind_s, &id_s, &unique_name, &doc, &content_type, &etag, &stamp],
                            )
                            .await
                    }
                    Expect::Tag(expected) => {
                        client
                            .query_opt(
                                "UPDATE documents SET unique_name = $3, doc = $4, content_type = $5, version = version + 1,
                                   etag = $6, last_modified = $7
                                 WHERE kind = $1 AND id = $2 AND etag = $8 RETURNING version",
                                &[&kind_s, &id_s, &unique_name, &doc, &content_type, &etag, &stamp, &expected],
                            )
                            .await
                    }
                    Expect::Exists => {
                        client
                            .query_opt(
                                "UPDATE documents SET unique_name = $3, doc = $4, content_type = $5, version = version + 1,
                                   etag = $6, last_modified = $7
                                 WHERE kind = $1 AND id = $2 RETURNING version",
                                &[&kind_s, &id_s, &unique_name, &doc, &content_type, &etag, &stamp],
                            )
                            .await
                    }
                    Expect::Anything => {
                        client
                            .query_opt(
                                "INSERT INTO documents (kind, id, unique_name, doc, content_type, version, etag, last_modified)
                                 VALUES ($1, $2, $3, $4, $5, 1, $6, $7)
                                 ON CONFLICT (kind, id) DO UPDATE SET unique_name = EXCLUDED.unique_name, doc = EXCLUDED.doc,
                                   content_type = EXCLUDED.content_type, version = documents.version + 1,
                                   etag = EXCLUDED.etag, last_modified = EXCLUDED.last_modified
                                 RETURNING version",
                                &[&kind_s, &id_s, &unique_name, &doc, &content_type, &etag, &stamp],
                            )
                            .await
                    }
                };
                let changed = match changed {
                    Err(e)
                        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
                    {
                        return Ok(Outcome::Conflict)
                    }
                    other => other?,
                };
                match changed {
                    Some(r) => {
                        let version: i64 = r.get(0);
                        let row = Row {
                            doc,
                            content_type,
                            version,
                            etag,
                            last_modified: stamp,
                        };
                        Ok(Outcome::Success {
                            row,
                            created: version == 1,
                        })
                    }
                    // Tell the caller why, from what is there now.
                    None => {
                        let current = self.get(kind, id).await?;
                        Ok(OwnedExpect::from(expect)
                            .refuse(current.as_ref())
                            .unwrap_or(Outcome::NotFound))
                    }
                }
            }
        }
    }

    /// Deletes (kind, id) if the stored state is what `expect` says.
    pub async fn conditional_delete(
        &self,
        kind: &str,
        id: &str,
        expect: Expect<'_>,
    ) -> Result<Outcome, Error> {
        let (kind_s, id_s) = (kind.to_owned(), id.to_owned());
        let owned = OwnedExpect::from(expect);
        match self {
            Db::Sqlite(conn) => {
                Self::sqlite(conn, move |c| {
                    let tx =
                        c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let current = sqlite_get(&tx, &kind_s, &id_s)?;
                    if let Some(outcome) = owned.refuse(current.as_ref()) {
                        return Ok(outcome);
                    }
                    let Some(row) = current else {
                        return Ok(Outcome::NotFound);
                    };
                    tx.execute(
                        "DELETE FROM documents WHERE kind = ?1 AND id = ?2",
                        [&kind_s, &id_s],
                    )?;
                    tx.commit()?;
                    Ok(Outcome::Success {
                        row,
                        created: false,
                    })
                })
                .await
            }
            Db::Postgres(client) => {
                let deleted =
                    match expect {
                        Expect::Tag(expected) => client
                            .query_opt(
                                "DELETE FROM documents WHERE kind = $1 AND id = $2 AND etag = $3
                                 RETURNING doc, content_type, version, etag, last_modified",
                                &[&kind_s, &id_s, &expected],
                            )
                            .await?,
                        _ => {
                            client
                                .query_opt(
                                    "DELETE FROM documents WHERE kind = $1 AND id = $2
                                 RETURNING doc, content_type, version, etag, last_modified",
                                    &[&kind_s, &id_s],
                                )
                                .await?
                        }
                    };
                match deleted {
                    Some(r) => Ok(Outcome::Success {
                        row: pg_row(&r),
                        created: false,
                    }),
                    None => {
                        let current = self.get(kind, id).await?;
                        Ok(owned.refuse(current.as_ref()).unwrap_or(Outcome::NotFound))
                    }
                }
            }
        }
    }
}

/// `Expect` without the borrow, for moving into a blocking task.
#[derive(Debug, Clone)]
enum OwnedExpect {
    Anything,
    Exists,
    Tag(String),
    Absent,
}

impl From<Expect<'_>> for OwnedExpect {
    fn from(e: Expect<'_>) -> Self {
        match e {
            Expect::Anything => OwnedExpect::Anything,
            Expect::Exists => OwnedExpect::Exists,
            Expect::Tag(t) => OwnedExpect::Tag(t.to_owned()),
            Expect::Absent => OwnedExpect::Absent,
        }
    }
}

impl OwnedExpect {
    /// Why a write expecting this may not go ahead on `current`, if it may not.
    fn refuse(&self, current: Option<&Row>) -> Option<Outcome> {
        match (self, current) {
            (OwnedExpect::Absent, Some(row)) => Some(Outcome::Exists {
                current: row.etag.clone(),
            }),
            (OwnedExpect::Exists | OwnedExpect::Tag(_), None) => Some(Outcome::NotFound),
            (OwnedExpect::Tag(expected), Some(row)) if *expected != row.etag => {
                Some(Outcome::VersionMismatch {
                    expected: expected.clone(),
                    current: row.etag.clone(),
                })
            }
            _ => None,
        }
    }
}

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        doc: r.get(0)?,
        content_type: r.get(1)?,
        version: r.get(2)?,
        etag: r.get(3)?,
        last_modified: r.get(4)?,
    })
}

fn sqlite_get(c: &rusqlite::Connection, kind: &str, id: &str) -> rusqlite::Result<Option<Row>> {
    use rusqlite::OptionalExtension;
    c.query_row(
        "SELECT doc, content_type, version, etag, last_modified FROM documents WHERE kind = ?1 AND id = ?2",
        [kind, id],
        sqlite_row,
    )
    .optional()
}

fn pg_row(r: &tokio_postgres::Row) -> Row {
    Row {
        doc: r.get(0),
        content_type: r.get(1),
        version: r.get(2),
        etag: r.get(3),
        last_modified: r.get(4),
    }
}
