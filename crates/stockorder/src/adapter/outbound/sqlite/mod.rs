//! SQLite storage (bundled SQLite, no system library): one group-committing writer thread and a
//! pool of readers over one WAL-mode database file.

mod errors;
mod lock;
mod readers;
mod recent;
mod rows;
mod schema;
mod visibility;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, MAIN_DB};

use crate::domain::{OrderEvent, OrderId, StatusChange, StockOrder, Symbol};
use crate::port::{
    EventBounds, EventRetention, Inserted, ListQuery, NoMetrics, OrderRepository, QueuePosition, Queued,
    RepositoryError, StoreMetrics, Transition,
};

pub use schema::MigrationError;

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite could not open or configure the file.
    #[error("cannot open SQLite database {path}")]
    Open {
        /// The database file, as `DATABASE_URL` named it: what the operator will look for.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The directory the file should be in does not exist.
    #[error("cannot create the SQLite database {path}: the directory {} does not exist; create it or choose another path in DATABASE_URL", dir.display())]
    NoDirectory {
        /// The database file, as `DATABASE_URL` named it: what the operator will look for.
        path: PathBuf,
        /// Its missing directory.
        dir: PathBuf,
    },
    /// What should be the file's directory is a file.
    #[error("cannot create the SQLite database {path}: {} is a file, not a directory; choose another path in DATABASE_URL", dir.display())]
    NotADirectory {
        /// The database file, as `DATABASE_URL` named it: what the operator will look for.
        path: PathBuf,
        /// What should have been its directory.
        dir: PathBuf,
    },
    /// The file system holding the database has no room left.
    #[error(
        "cannot open SQLite database {path}: the disk is full ({free} bytes free); free some space and start again"
    )]
    Full {
        /// The database file, as `DATABASE_URL` named it: what the operator will look for.
        path: PathBuf,
        /// Bytes free for the database.
        free: u64,
    },
    /// The directory cannot be written, so SQLite cannot create the file or, beside it, the
    /// WAL and its index.
    #[error(
        "cannot open SQLite database {path}: its directory {} is read-only or not writable by this user, and SQLite writes the database and its -wal and -shm files there; fix the directory's permissions or choose another path in DATABASE_URL",
        dir.display()
    )]
    DirectoryNotWritable {
        /// The file, as an absolute path.
        path: PathBuf,
        /// Its directory, as an absolute path.
        dir: PathBuf,
    },
    /// Another process serves this file: one server per SQLite file.
    #[error(
        "SQLite database {path} is in use by another stockorder process (PID {}): one server per file; stop that process, or give this one another DATABASE_URL",
        pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
    )]
    InUse {
        /// The file, as an absolute path.
        path: PathBuf,
        /// The process that has it, as its lock file names it.
        pid: Option<u32>,
    },
    /// The lock file beside the database could not be opened or written.
    #[error("cannot lock SQLite database {path}: {source}")]
    Lock {
        /// The lock file beside the database (`<file>.lock`), which may be removed once no
        /// server runs.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file can be read but not written (a read-only mount, an immutable file): every order
    /// would fail, so the service does not start on it.
    #[error(
        "SQLite database {path} is read-only; the service must write to it (check the mount and the file's permissions and attributes)"
    )]
    ReadOnly {
        /// The database file, as `DATABASE_URL` named it: what the operator will look for.
        path: PathBuf,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate SQLite database {path}")]
    Migrate {
        /// The database file, as `DATABASE_URL` named it: what the operator will look for.
        path: PathBuf,
        /// What went wrong.
        source: MigrationError,
    },
    /// The writer thread could not be started.
    #[error("cannot start the SQLite writer thread")]
    Thread(#[from] std::io::Error),
}

/// Orders in a SQLite file. Cheap to clone; all clones share one writer and one read pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    writer: writer::Writer,
    readers: Arc<readers::ReadPool>,
    recent: Arc<recent::Recent>,
    /// The file's lock (see `lock`), until [`SqliteStore::close`].
    lock: Mutex<Option<lock::FileLock>>,
    /// Bumped after each commit (see `visibility`): followers of the event log wait on it.
    wakeups: Arc<tokio::sync::watch::Sender<u64>>,
    /// While another process writes to the file: the task that wakes followers regularly.
    overlap_ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How often followers of the event log look for events another process appended, while one
/// shares the file.
pub const OVERLAP_WAKEUP: std::time::Duration = std::time::Duration::from_millis(20);

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`, and starts its writer.
    /// The file is this process's alone until [`SqliteStore::close`]: a second process opening
    /// it is refused ([`OpenError::InUse`], naming this one).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_taking_over(path, None, EventRetention::default(), Arc::new(NoMetrics))
    }

    /// [`SqliteStore::open`] in the new process of an in-place upgrade: `handed` is the file
    /// lock the old process passed on (see [`SqliteStore::lock_fd`]), adopted so that the file
    /// is never unlocked between the two. Until the old process has exited, say so with
    /// [`SqliteStore::other_process_writes`]. Each commit is reported to `metrics`.
    pub fn open_taking_over(
        path: impl AsRef<Path>,
        handed: Option<std::os::fd::OwnedFd>,
        retention: EventRetention,
        metrics: Arc<dyn StoreMetrics>,
    ) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        check_writable(&path)?;
        // Before the file is touched: a second server must not migrate or write it.
        let lock = take_lock(&path, handed)?;
        let conn = open_migrated(&path)?;
        let commits = readers::Commits::default();
        let readers = Arc::new(readers::ReadPool::new(path.clone(), commits.clone()));
        let recent = Arc::new(recent::Recent::new(commits.clone()));
        let wakeups = Arc::new(tokio::sync::watch::channel(0).0);
        let visibility = visibility::Visibility {
            commits,
            recent: Arc::clone(&recent),
            readers: Arc::clone(&readers),
            wakeups: Arc::clone(&wakeups),
        };
        let writer = writer::Writer::spawn(conn, retention, move |changes, writes, took| {
            visibility.after_commit(changes);
            metrics.commit("sqlite", writes, took);
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer,
                readers,
                recent,
                wakeups,
                overlap_ticker: Mutex::new(None),
                lock: Mutex::new(Some(lock)),
            }),
        })
    }

    /// The database file, for logs and for tools that read it back after the service stops.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Says whether another process may be writing to this file right now (an in-place
    /// upgrade's overlap): readers then start a fresh snapshot for every read, since the
    /// commit count they otherwise rely on only sees this process's commits, and the cache of
    /// recent orders is off, as only this process's writer keeps it current. Followers of the
    /// event log, woken by this process's commits only, are also woken every
    /// [`OVERLAP_WAKEUP`] meanwhile, to read what the other process appends.
    pub fn other_process_writes(&self, yes: bool) {
        self.inner.recent.set_enabled(!yes);
        self.inner.readers.set_shared(yes);
        let mut ticker = self
            .inner
            .overlap_ticker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(running) = ticker.take() {
            running.abort();
        }
        if yes && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let wakeups = Arc::clone(&self.inner.wakeups);
            *ticker = Some(runtime.spawn(async move {
                let mut tick = tokio::time::interval(OVERLAP_WAKEUP);
                loop {
                    tick.tick().await;
                    wakeups.send_modify(|n| *n += 1);
                }
            }));
        }
    }

    /// The locked file that makes this process the file's one server, to pass to the process
    /// that replaces it in an in-place upgrade (it stays locked while either has it open).
    /// `None` once closed.
    pub fn lock_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.lock.lock().ok()?.as_ref().map(lock::FileLock::fd)
    }

    /// Closes the store: reads are refused from now on, every queued write is committed, the
    /// WAL is checkpointed into the main file, and the connection is closed. Later calls on any
    /// clone answer [`RepositoryError::Closed`]. Call it after the servers have stopped.
    pub async fn close(&self) -> Result<(), RepositoryError> {
        if let Some(ticker) = self.inner.overlap_ticker.lock().ok().and_then(|mut t| t.take()) {
            ticker.abort();
        }
        self.inner.recent.close();
        self.inner.readers.close();
        let closed = self.inner.writer.close().await;
        // The file is free for the next server once everything is written (unless this
        // process handed the lock on to its successor, which keeps it).
        drop(self.inner.lock.lock().ok().and_then(|mut slot| slot.take()));
        closed
    }
}

/// Refuses, before anything is opened, a file SQLite could not write: its directory missing or
/// not a directory, the file or the directory not writable. SQLite needs to write the file and,
/// beside it, the WAL and its index.
fn check_writable(path: &Path) -> Result<(), OpenError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        let dir = dir.to_path_buf();
        return Err(if dir.exists() {
            OpenError::NotADirectory {
                dir,
                path: path.to_path_buf(),
            }
        } else {
            OpenError::NoDirectory {
                dir,
                path: path.to_path_buf(),
            }
        });
    }
    // Asked of the kernel, not of the permission bits: a read-only mount or an immutable
    // file refuses root too.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let writable = |p: &Path| !p.exists() || nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok();
    if !writable(path) {
        return Err(OpenError::ReadOnly { path: absolute(path) });
    }
    if !writable(dir) {
        return Err(OpenError::DirectoryNotWritable {
            path: absolute(path),
            dir: absolute(dir),
        });
    }
    Ok(())
}

/// `p` made absolute for an error: "stock_orders.db" alone does not say where the service looked.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The file's lock: adopted from the previous process of an in-place upgrade when it `handed`
/// one on, taken otherwise (refused while another process holds it).
fn take_lock(path: &Path, handed: Option<std::os::fd::OwnedFd>) -> Result<lock::FileLock, OpenError> {
    Ok(match handed.and_then(|fd| lock::FileLock::adopt(path, fd)) {
        Some(lock) => {
            tracing::info!("took over the database's lock from the previous process");
            lock
        }
        None => lock::FileLock::take(path).map_err(|e| match e {
            lock::LockError::InUse(pid) => OpenError::InUse {
                path: absolute(path),
                pid,
            },
            lock::LockError::Io(source) => OpenError::Lock {
                path: absolute(&lock::lock_path(path)),
                source,
            },
        })?,
    })
}

/// The writer's connection: opened, checked writable and owned by this service, configured and
/// migrated.
fn open_migrated(path: &Path) -> Result<Connection, OpenError> {
    let path = path.to_path_buf();
    let open_err = |source: rusqlite::Error| match errors::full_disk(&source, &path) {
        Some(free) => OpenError::Full {
            path: path.clone(),
            free,
        },
        None => OpenError::Open {
            path: path.clone(),
            source,
        },
    };
    schema::before_first_connection();
    let mut conn = Connection::open(&path).map_err(open_err)?;
    // The first read maps the file and its WAL index: where a full disk shows first.
    conn.pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))
        .map_err(open_err)?;
    // SQLite opens a file it may not write read-only, silently; say so now rather than
    // fail every order later.
    if conn.is_readonly(MAIN_DB).map_err(open_err)? {
        return Err(OpenError::ReadOnly { path });
    }
    let migrate_err = |source| OpenError::Migrate {
        path: path.clone(),
        source,
    };
    schema::check_owner(&conn).map_err(migrate_err)?;
    schema::configure_writer(&conn).map_err(open_err)?;
    schema::migrate(&mut conn).map_err(migrate_err)?;
    schema::append_events_of_changes(&conn).map_err(open_err)?;
    Ok(conn)
}

impl OrderRepository for SqliteStore {
    async fn insert(&self, order: StockOrder) -> Result<Inserted, RepositoryError> {
        self.inner.writer.insert(order).await
    }

    async fn get(&self, id: OrderId) -> Result<Option<StockOrder>, RepositoryError> {
        if let Some(order) = self.inner.recent.get(id) {
            return Ok(Some(order));
        }
        let seen = self.inner.recent.before_read();
        let order = match self.inner.readers.try_with(move |conn| rows::by_id(conn, id)) {
            Ok(read) => read?,
            // Every pooled reader is busy: open one on the blocking pool, not on this worker.
            Err(read) => {
                let inner = Arc::clone(&self.inner);
                tokio::task::spawn_blocking(move || inner.readers.with(read))
                    .await
                    .map_err(|e| RepositoryError::Database(Box::new(e)))??
            }
        };
        if let Some(order) = &order {
            self.inner.recent.offer(order, seen);
        }
        Ok(order)
    }

    async fn list(&self, query: ListQuery, limit: u32) -> Result<Vec<StockOrder>, RepositoryError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.readers.with(|conn| rows::list(conn, &query, limit)))
            .await
            .map_err(|e| RepositoryError::Database(Box::new(e)))?
    }

    async fn change_status(&self, change: StatusChange) -> Result<Transition, RepositoryError> {
        self.inner.writer.change_status(change).await
    }

    async fn unprocessed(&self, after: QueuePosition, limit: u32) -> Result<Vec<Queued>, RepositoryError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.readers.with(|conn| rows::unprocessed(conn, after, limit)))
            .await
            .map_err(|e| RepositoryError::Database(Box::new(e)))?
    }

    async fn reoffer_resting(&self) -> Result<(), RepositoryError> {
        // Resting orders never left `orders_queue`: asking from the start offers them again.
        Ok(())
    }

    async fn probe(&self) -> Result<(), RepositoryError> {
        self.inner.writer.probe().await
    }

    async fn settle(&self, changes: Vec<StatusChange>, _resting: Vec<OrderId>) -> Result<Vec<bool>, RepositoryError> {
        // Resting orders are left as they are: the processor's cursor has passed them.
        self.inner.writer.settle(changes).await
    }

    async fn events(&self, after: u64, symbol: Option<Symbol>, limit: u32) -> Result<Vec<OrderEvent>, RepositoryError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            inner
                .readers
                .with(|conn| rows::events(conn, after, symbol.as_ref(), limit))
        })
        .await
        .map_err(|e| RepositoryError::Database(Box::new(e)))?
    }

    async fn event_bounds(&self) -> Result<EventBounds, RepositoryError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.readers.with(rows::event_bounds))
            .await
            .map_err(|e| RepositoryError::Database(Box::new(e)))?
    }

    fn event_wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.wakeups.subscribe()
    }
}

#[cfg(test)]
mod tests;
