//! The SQLite store: names, metadata and leases in one database file that survives restarts and
//! `kill -9` of the name server.
//!
//! Reads are served from memory (the same engine as the memory store); every change is written
//! to the file by one dedicated thread before it is acknowledged, so the async runtime never
//! blocks on the disk. The thread commits whatever changes are queued in one transaction (group
//! commit), so many concurrent registrations share one sync. A commit that fails (a full disk)
//! fails every batch after it unwritten until the engine has read the file back (see
//! `engine.rs`), so the store takes writes again once the disk does.
//!
//! Durability: WAL journal with `synchronous=FULL`, so each commit is synced to the disk before
//! the change is acknowledged; an acknowledged registration survives `kill -9` of the process
//! (WAL with NORMAL would already do that, since the WAL write reaches the OS before the commit
//! returns) and also a crash of the machine. The file is opened with an exclusive lock, so a
//! second name server on the same file is refused instead of diverging.
//!
//! Plain names are rows of `names` (tags in `tags`); the entries of shared names (several
//! daemons behind one name) are rows of `shared`, one per (name, URI), tags in `shared_tags`.
//!
//! Lease deadlines are stored on the wall clock and renewed by each keep-alive; on restart a
//! lease past its deadline expires at once, with its names.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::engine::{store_via_engine, Engine, Journal, State, Write};
use super::{Entry, LeaseId, Limits};
use crate::NamingError;

/// Version of the schema below, in `PRAGMA user_version`. Version 2 added the `shared` and
/// `shared_tags` tables (a version-1 file is upgraded by creating them).
const SCHEMA_VERSION: i64 = 2;

/// The tables [`SCHEMA`] makes.
const OWN_TABLES: [&str; 5] = ["names", "tags", "shared", "shared_tags", "leases"];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY NOT NULL,
    uri TEXT NOT NULL,
    lease INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    name TEXT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (name, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shared (
    name TEXT NOT NULL,
    uri TEXT NOT NULL,
    lease INTEGER,
    PRIMARY KEY (name, uri)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shared_tags (
    name TEXT NOT NULL,
    uri TEXT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (name, uri, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY NOT NULL,
    ttl_ms INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL
);
";

/// Bytes of WAL kept after a checkpoint (SQLite's `journal_size_limit`).
const JOURNAL_SIZE_LIMIT: i64 = 64 << 20;

/// Most queued change batches committed in one transaction.
const GROUP_COMMIT: usize = 256;

/// Names, entries and leases in an SQLite file, served from memory.
#[derive(Debug)]
pub struct SqliteStore {
    engine: Arc<Engine>,
}

store_via_engine!(SqliteStore);

impl SqliteStore {
    /// Opens (or creates) the store at `path` and loads it; leases past their deadline expire
    /// at once. Needs a tokio runtime (for the lease timer).
    pub async fn open(path: impl AsRef<Path>, limits: Limits) -> Result<Self, NamingError> {
        let path = path.as_ref().to_path_buf();
        let (batches, queue) = mpsc::channel::<Request>();
        let (loaded_tx, loaded) = oneshot::channel();
        let (closed_tx, closed) = mpsc::channel();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("rmi-ns-sqlite".into())
            .spawn(move || {
                let conn = match open_and_load(&thread_path) {
                    Ok((conn, state)) => {
                        let _ = loaded_tx.send(Ok(state));
                        conn
                    }
                    Err(e) => {
                        let _ = loaded_tx.send(Err(e));
                        return;
                    }
                };
                close(write_loop(conn, queue));
                let _ = closed_tx.send(());
            })
            .map_err(|e| NamingError::new(format!("cannot start the SQLite writer: {e}")))?;
        let state = loaded
            .await
            .map_err(|_| NamingError::new("the SQLite writer stopped while loading"))??;
        let journal = SqlJournal {
            batches,
            closed: std::sync::Mutex::new(closed),
        };
        Ok(SqliteStore {
            engine: Engine::new(state, limits, Some(Box::new(journal))),
        })
    }
}

/// Changes queued for the writer thread, and where to say they are durable.
#[derive(Debug)]
struct Batch {
    writes: Vec<Write>,
    ack: oneshot::Sender<Result<(), String>>,
}

/// What the writer thread is asked to do, in order.
#[derive(Debug)]
enum Request {
    /// Write a batch.
    Write(Batch),
    /// Read everything back, and take writes again.
    Reload(oneshot::Sender<Result<State, String>>),
}

/// The writer thread's queue.
#[derive(Debug)]
struct SqlJournal {
    batches: mpsc::Sender<Request>,
    /// Hears from the writer thread once it has closed the file (see `Drop`).
    closed: std::sync::Mutex<mpsc::Receiver<()>>,
}

impl Drop for SqlJournal {
    /// Ends the writer thread's queue and waits (at most [`CLOSE_WITHIN`]) for it to fold the
    /// WAL into the file and close it: a process that returns from `main` with its runtime does
    /// not kill the thread mid-way, and leave the names in `names.db-wal` only, where a copy of
    /// `names.db` alone is an empty store and a backup restored over it has the WAL replayed
    /// on top (helper-151 #1).
    fn drop(&mut self) {
        let (ended, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.batches, ended));
        let closed = self
            .closed
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(mpsc::RecvTimeoutError::Timeout) = closed.recv_timeout(CLOSE_WITHIN) {
            tracing::warn!(
                "the SQLite store did not close within {CLOSE_WITHIN:?}: its WAL file may hold \
                 changes, read back at the next start"
            );
        }
    }
}

/// How long dropping the store waits for its file to close.
const CLOSE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Folds the WAL into the database file and closes it: copying the file alone then copies the
/// store. (Closing checkpoints too, but says nothing when it cannot.)
fn close(conn: Connection) {
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "the SQLite store's WAL could not be folded into its file");
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "the SQLite store did not close cleanly");
    }
}

impl Journal for SqlJournal {
    fn submit(&self, writes: Vec<Write>) -> oneshot::Receiver<Result<(), String>> {
        let (ack, done) = oneshot::channel();
        // If the thread is gone, `ack` is dropped and the waiter hears that it stopped.
        let _ = self.batches.send(Request::Write(Batch { writes, ack }));
        done
    }

    fn reload(&self) -> oneshot::Receiver<Result<State, String>> {
        let (answer, read) = oneshot::channel();
        let _ = self.batches.send(Request::Reload(answer));
        read
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn sql_error(path: &Path, e: rusqlite::Error) -> NamingError {
    use rusqlite::ErrorCode;
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    // SQLite says "disk I/O error" or "readonly database" where it could not write the file,
    // its directory (the WAL goes beside it) or the disk: say which to look at (helper-151 #3).
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let why = match code {
        Some(ErrorCode::DatabaseBusy) => {
            return NamingError::new(format!(
                "the SQLite store {} is in use by another process (another rmi-ns?)",
                path.display()
            ))
        }
        Some(
            ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure,
        ) => format!(
            " (can this user read and write the file, and write its directory {}, where \
             SQLite keeps its -wal file? Is the disk full?)",
            dir.display()
        ),
        Some(ErrorCode::DiskFull) => " (the disk is full)".to_owned(),
        _ => String::new(),
    };
    NamingError::new(format!("SQLite store {}: {e}{why}", path.display()))
}

/// Opens the file with the settings above, creates the schema and reads everything back.
fn open_and_load(path: &Path) -> Result<(Connection, State), NamingError> {
    let err = |e| sql_error(path, e);
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_millis(500)).map_err(err)?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(err)?;
    refuse_foreign(&conn, path)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(NamingError::new(format!(
            "SQLite store {}: cannot use WAL journal mode (got {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    // A WAL grown by a large transaction is cut back at the next checkpoint, not kept at its
    // peak for the process's life.
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(err)?;
    // The tables and the version that says they are rmi-ns's, in one transaction.
    conn.execute_batch(&format!(
        "BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    ))
    .map_err(err)?;
    let state = load(&conn).map_err(|e| match e {
        Load::Sql(e) => err(e),
        Load::Bad(why) => NamingError::new(format!("SQLite store {}: {why}", path.display())),
    })?;
    Ok((conn, state))
}

/// Refuses a file that is not an rmi-ns store, before anything is written to it (the switch to
/// WAL included): one made by a newer rmi; a Pyro name server's database (Pyro5's
/// `SqlStorage`, tables `pyro_names` and `pyro_metadata`), whose names rmi-ns would not see; or
/// another program's database, which it would add its tables to and whose `user_version` it
/// would overwrite, whatever that `user_version` is: a file holding tables no rmi-ns made, or
/// tables named as rmi-ns's with other columns, or a `user_version` and none of rmi-ns's tables.
fn refuse_foreign(conn: &Connection, path: &Path) -> Result<(), NamingError> {
    let err = |e| sql_error(path, e);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if version > SCHEMA_VERSION {
        return Err(NamingError::new(format!(
            "SQLite store {} has schema version {version}, made by a newer rmi (this one knows \
             {SCHEMA_VERSION}); the file was not changed",
            path.display()
        )));
    }
    // (SQLite's own, such as `sqlite_stat1`, are nobody's.)
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' \
             ESCAPE '\\' ORDER BY name",
        )
        .and_then(|mut q| q.query_map([], |r| r.get(0))?.collect())
        .map_err(err)?;
    // Only rmi-ns's own tables (a file made before the version was written with them may
    // lack it), each with rmi-ns's columns.
    if tables.iter().all(|t| OWN_TABLES.contains(&t.as_str())) {
        if version != 0 && tables.is_empty() {
            return Err(NamingError::new(format!(
                "SQLite store {}: the file has user_version {version} but none of rmi-ns's \
                 tables, so another program made it; give rmi-ns a file of its own; the file \
                 was not changed",
                path.display()
            )));
        }
        let reference = Connection::open_in_memory()
            .and_then(|r| r.execute_batch(SCHEMA).map(|()| r))
            .map_err(err)?;
        for table in &tables {
            let found = columns(conn, table).map_err(err)?;
            if found != columns(&reference, table).map_err(err)? {
                return Err(NamingError::new(format!(
                    "SQLite store {}: its table {table} is not rmi-ns's (columns {}), so \
                     another program made it; give rmi-ns a file of its own; the file was not \
                     changed",
                    path.display(),
                    found.join(", ")
                )));
            }
        }
        return Ok(());
    }
    if tables.iter().any(|t| t == "pyro_names") {
        return Err(NamingError::new(format!(
            "SQLite store {}: this is a Pyro name server's database (table pyro_names), and \
             rmi-ns keeps its names in a schema of its own: give rmi-ns another file (move the \
             names over with `pyro5-nsc list` and `rmi-nsc register`); the file was not changed",
            path.display()
        )));
    }
    Err(NamingError::new(format!(
        "SQLite store {}: the file holds tables no rmi-ns made ({}); give rmi-ns a file of its \
         own; the file was not changed",
        path.display(),
        tables.join(", ")
    )))
}

/// The names of `table`'s columns, in order.
fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?
        .query_map([table], |r| r.get(0))?
        .collect()
}

enum Load {
    Sql(rusqlite::Error),
    Bad(String),
}

impl From<rusqlite::Error> for Load {
    fn from(e: rusqlite::Error) -> Self {
        Load::Sql(e)
    }
}

fn load(conn: &Connection) -> Result<State, Load> {
    let now = unix_ms(SystemTime::now());
    let mut leases = Vec::new();
    let mut stmt = conn.prepare("SELECT id, ttl_ms, deadline_ms FROM leases")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (id, ttl, deadline): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        let ttl = Duration::from_millis(ttl.max(0) as u64);
        // At most the TTL: a clock set back since (a board without a clock booting in 1970,
        // an NTP step back) would otherwise keep a dead daemon's names for the jump's length.
        let remaining = Duration::from_millis(deadline.saturating_sub(now).max(0) as u64).min(ttl);
        leases.push((LeaseId(id as u64), ttl, remaining));
    }
    let mut entries = std::collections::BTreeMap::new();
    let mut stmt = conn.prepare("SELECT name, uri, lease FROM names")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (name, uri, lease): (String, String, Option<i64>) =
            (row.get(0)?, row.get(1)?, row.get(2)?);
        let entry = read_entry(&name, &uri, lease, false)?;
        entries.insert((name, String::new()), entry);
    }
    let mut stmt = conn.prepare("SELECT name, tag FROM tags")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (name, tag): (String, String) = (row.get(0)?, row.get(1)?);
        if let Some(entry) = entries.get_mut(&(name, String::new())) {
            entry.metadata.insert(tag);
        }
    }
    let mut stmt = conn.prepare("SELECT name, uri, lease FROM shared")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (name, uri, lease): (String, String, Option<i64>) =
            (row.get(0)?, row.get(1)?, row.get(2)?);
        let entry = read_entry(&name, &uri, lease, true)?;
        entries.insert((name, uri), entry);
    }
    let mut stmt = conn.prepare("SELECT name, uri, tag FROM shared_tags")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (name, uri, tag): (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
        if let Some(entry) = entries.get_mut(&(name, uri)) {
            entry.metadata.insert(tag);
        }
    }
    let entries = entries.into_iter().map(|((name, _), entry)| (name, entry));
    Ok(State::load(entries, leases))
}

fn read_entry(name: &str, uri: &str, lease: Option<i64>, shared: bool) -> Result<Entry, Load> {
    let uri = uri
        .parse()
        .map_err(|e| Load::Bad(format!("name {name:?} has an unreadable uri {uri:?}: {e}")))?;
    Ok(Entry {
        uri,
        metadata: BTreeSet::new(),
        lease: lease.map(|l| LeaseId(l as u64)),
        shared,
    })
}

/// The writer thread: commits queued batches, as many as are waiting, in one transaction each
/// round, then acknowledges them. After a failed commit, batches fail unwritten until a
/// reload (they were made on a state that held the failed changes). Ends when the store is
/// dropped, handing the connection back to be closed.
fn write_loop(mut conn: Connection, queue: mpsc::Receiver<Request>) -> Connection {
    let mut failed: Option<String> = None;
    let mut next = queue.recv().ok();
    while let Some(request) = next.take() {
        let first = match request {
            Request::Reload(answer) => {
                // What a failed commit left open (a rollback that failed) is not read back.
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                let read = if conn.is_autocommit() {
                    load(&conn).map_err(|e| match e {
                        Load::Sql(e) => e.to_string(),
                        Load::Bad(why) => why,
                    })
                } else {
                    Err("a failed transaction cannot be rolled back".to_owned())
                };
                if read.is_ok() {
                    failed = None;
                }
                let _ = answer.send(read);
                next = queue.recv().ok();
                continue;
            }
            Request::Write(batch) => batch,
        };
        let mut batches = vec![first];
        while batches.len() < GROUP_COMMIT {
            match queue.try_recv() {
                Ok(Request::Write(batch)) => batches.push(batch),
                Ok(reload) => {
                    next = Some(reload);
                    break;
                }
                Err(_) => break,
            }
        }
        let result = match &failed {
            Some(why) => Err(format!(
                "not written: an earlier write failed ({why}); the store is being read back"
            )),
            None => commit(&mut conn, &batches).map_err(|e| e.to_string()),
        };
        if let (Err(e), None) = (&result, &failed) {
            tracing::error!(error = %e, "the SQLite store could not commit");
            failed = Some(e.clone());
        }
        for batch in batches {
            let _ = batch.ack.send(result.clone());
        }
        if next.is_none() {
            next = queue.recv().ok();
        }
    }
    conn
}

fn commit(conn: &mut Connection, batches: &[Batch]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for write in batches.iter().flat_map(|b| &b.writes) {
        match write {
            Write::PutName { name, entry } if entry.shared => {
                let uri = entry.uri.to_string();
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO shared (name, uri, lease) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![name, uri, entry.lease.map(|l| l.0 as i64)])?;
                tx.prepare_cached("DELETE FROM shared_tags WHERE name = ?1 AND uri = ?2")?
                    .execute(params![name, uri])?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO shared_tags (name, uri, tag) VALUES (?1, ?2, ?3)",
                )?;
                for tag in &entry.metadata {
                    insert.execute(params![name, uri, tag])?;
                }
            }
            Write::DeleteShared { name, uri } => {
                let uri = uri.to_string();
                tx.prepare_cached("DELETE FROM shared WHERE name = ?1 AND uri = ?2")?
                    .execute(params![name, uri])?;
                tx.prepare_cached("DELETE FROM shared_tags WHERE name = ?1 AND uri = ?2")?
                    .execute(params![name, uri])?;
            }
            Write::PutName { name, entry } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO names (name, uri, lease) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![
                    name,
                    entry.uri.to_string(),
                    entry.lease.map(|l| l.0 as i64)
                ])?;
                tx.prepare_cached("DELETE FROM tags WHERE name = ?1")?
                    .execute(params![name])?;
                let mut insert =
                    tx.prepare_cached("INSERT INTO tags (name, tag) VALUES (?1, ?2)")?;
                for tag in &entry.metadata {
                    insert.execute(params![name, tag])?;
                }
            }
            Write::DeleteName(name) => {
                tx.prepare_cached("DELETE FROM names WHERE name = ?1")?
                    .execute(params![name])?;
                tx.prepare_cached("DELETE FROM tags WHERE name = ?1")?
                    .execute(params![name])?;
                tx.prepare_cached("DELETE FROM shared WHERE name = ?1")?
                    .execute(params![name])?;
                tx.prepare_cached("DELETE FROM shared_tags WHERE name = ?1")?
                    .execute(params![name])?;
            }
            Write::PutLease { id, ttl, deadline } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO leases (id, ttl_ms, deadline_ms) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![
                    id.0 as i64,
                    ttl.as_millis() as i64,
                    unix_ms(*deadline)
                ])?;
            }
            Write::DeleteLease(id) => {
                tx.prepare_cached("DELETE FROM leases WHERE id = ?1")?
                    .execute(params![id.0 as i64])?;
            }
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commit frames in a WAL file of the current generation: one per committed transaction.
    /// (A frame is a 24-byte header and a page; a commit frame's header holds the database's
    /// size after the commit, any other frame 0; a frame is current when its salts match the
    /// file header's.)
    fn commits_in_wal(wal: &[u8]) -> usize {
        let page_size = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
        let salts = &wal[16..24];
        wal[32..]
            .chunks_exact(24 + page_size)
            .filter(|frame| &frame[8..16] == salts && frame[4..8] != [0; 4])
            .count()
    }

    /// Group commit: the batches queued while the writer was busy go into one transaction,
    /// at most [`GROUP_COMMIT`] of them, and each is acknowledged.
    #[tokio::test]
    async fn queued_batches_share_a_transaction_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("names.db");
        // The store's own settings but the exclusive lock, which would keep out the second
        // connection this test holds open so that the writer's close leaves the WAL file behind.
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let keep_wal = Connection::open(&path).unwrap();
        keep_wal
            .query_row("SELECT count(*) FROM leases", [], |_| Ok(()))
            .unwrap();
        let wal_path = dir.path().join("names.db-wal");
        let before = commits_in_wal(&std::fs::read(&wal_path).unwrap());

        let (batches, queue) = mpsc::channel();
        let mut acks = Vec::new();
        for i in 0..GROUP_COMMIT + 1 {
            let (ack, done) = oneshot::channel();
            let writes = vec![Write::PutLease {
                id: LeaseId(i as u64 + 1),
                ttl: Duration::from_secs(60),
                deadline: SystemTime::now() + Duration::from_secs(60),
            }];
            batches.send(Request::Write(Batch { writes, ack })).unwrap();
            acks.push(done);
        }
        drop(batches);
        write_loop(conn, queue);

        for done in acks {
            assert_eq!(done.await.unwrap(), Ok(()));
        }
        let rows: i64 = keep_wal
            .query_row("SELECT count(*) FROM leases", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, GROUP_COMMIT as i64 + 1);
        let after = commits_in_wal(&std::fs::read(&wal_path).unwrap());
        assert_eq!(
            after - before,
            2,
            "{} queued batches are two transactions: {GROUP_COMMIT}, then 1",
            GROUP_COMMIT + 1
        );
    }

    /// A store file with the store's settings but the exclusive lock, so that another
    /// connection (the second) can take the write lock; busy at once, not after 5 s.
    fn shared_store() -> (tempfile::TempDir, Connection, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("names.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.busy_timeout(Duration::ZERO).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let other = Connection::open(&path).unwrap();
        (dir, conn, other)
    }

    fn lease_write(id: u64) -> Vec<Write> {
        vec![Write::PutLease {
            id: LeaseId(id),
            ttl: Duration::from_secs(60),
            deadline: SystemTime::now() + Duration::from_secs(60),
        }]
    }

    /// Sends `writes` to the writer and waits for its answer.
    fn write(batches: &mpsc::Sender<Request>, writes: Vec<Write>) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        batches.send(Request::Write(Batch { writes, ack })).unwrap();
        done.blocking_recv().unwrap()
    }

    /// A commit that fails (here: another connection holds the write lock, as a full disk
    /// would fail it) fails every batch after it unwritten, even once the disk would take it:
    /// they were made on a state that held the failed change. A reload reads back what the
    /// file holds and lets writes through again.
    #[test]
    fn after_a_failed_commit_batches_wait_for_a_reload() {
        let (_dir, conn, other) = shared_store();
        let (batches, queue) = mpsc::channel();
        let writer = std::thread::spawn(move || write_loop(conn, queue));

        assert_eq!(write(&batches, lease_write(1)), Ok(()));
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let failed = write(&batches, lease_write(2)).unwrap_err();
        assert!(failed.contains("locked"), "{failed}");
        other.execute_batch("COMMIT").unwrap();
        let refused = write(&batches, lease_write(3)).unwrap_err();
        assert!(refused.contains("an earlier write failed"), "{refused}");

        let (answer, read) = oneshot::channel();
        batches.send(Request::Reload(answer)).unwrap();
        let state = read.blocking_recv().unwrap().unwrap();
        assert_eq!(state.lease_ids(), [LeaseId(1)], "only what was written");
        assert_eq!(write(&batches, lease_write(4)), Ok(()));
        let rows: Vec<i64> = other
            .prepare("SELECT id FROM leases ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, [1, 4]);
        drop(batches);
        writer.join().unwrap();
    }

    /// A reload queued behind a failed write, in the same round of the writer (taken while it
    /// gathers a group), comes after that write and before the next: the next is tried (and
    /// here fails on its own, the lock being still held), not refused as queued after a
    /// failure.
    #[test]
    fn a_reload_queued_among_writes_takes_its_turn() {
        let (_dir, conn, other) = shared_store();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (batches, queue) = mpsc::channel();
        let queued = |writes| {
            let (ack, done) = oneshot::channel();
            batches.send(Request::Write(Batch { writes, ack })).unwrap();
            done
        };
        let first = queued(lease_write(1));
        let (answer, read) = oneshot::channel();
        batches.send(Request::Reload(answer)).unwrap();
        let second = queued(lease_write(2));
        drop(batches);
        write_loop(conn, queue);
        let first = first.blocking_recv().unwrap().unwrap_err();
        assert!(first.contains("locked"), "{first}");
        assert!(read.blocking_recv().unwrap().is_ok());
        let second = second.blocking_recv().unwrap().unwrap_err();
        assert!(second.contains("locked"), "tried, not refused: {second}");
    }
}
