//! One JSON file of state kept whole (the certificate inventory, the MX TLS memory): read once
//! at start, bounded; rewritten atomically (temporary file, fsync, rename) by a background
//! thread, so a session never waits on the disk and a crash leaves the old file or the new one,
//! never half of each. A file that cannot be read back is set aside, logged and counted, and
//! the proxy starts that state anew: losing a memory is better than refusing to start.

use crate::log;
use serde::de::DeserializeOwned;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

/// What the owner of a state file has to write now.
pub enum Snapshot {
    /// Nothing changed since the last write.
    Clean,
    /// The whole file's new bytes.
    Dirty(Vec<u8>),
    /// The owner is gone: the writer stops.
    Gone,
}

/// Reads `path` as JSON of type `T`. `None` when there is no file yet, or when it is corrupt,
/// truncated or larger than `max_bytes`: then it is renamed to `<name>.corrupt-<unix time>`
/// (kept for whoever wants to look), and the failure is logged and counted under `label`.
pub fn load<T: DeserializeOwned>(path: &Path, label: &'static str, max_bytes: u64) -> Option<T> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            set_aside(path, label, &format!("cannot open: {e}"));
            return None;
        }
    };
    let mut bytes = Vec::new();
    // One byte more than allowed tells "at the bound" from "over it" without reading it all.
    if let Err(e) = (&mut file).take(max_bytes + 1).read_to_end(&mut bytes) {
        set_aside(path, label, &format!("cannot read: {e}"));
        return None;
    }
    if bytes.len() as u64 > max_bytes {
        set_aside(path, label, &format!("larger than {max_bytes} bytes"));
        return None;
    }
    match serde_json::from_slice(&bytes) {
        Ok(value) => Some(value),
        Err(e) => {
            set_aside(path, label, &format!("not valid: {e}"));
            None
        }
    }
}

/// Moves a bad state file out of the way and says so.
pub fn set_aside(path: &Path, label: &'static str, why: &str) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut kept = path.as_os_str().to_owned();
    kept.push(format!(".corrupt-{now}"));
    let kept = PathBuf::from(kept);
    let renamed = std::fs::rename(path, &kept);
    crate::metrics::state_file_error(label, "corrupt");
    log::warn("state_file_corrupt")
        .field("file", path.display())
        .field("detail", why)
        .field(
            "kept_as",
            match &renamed {
                Ok(()) => kept.display().to_string(),
                Err(e) => format!("- (cannot rename: {e})"),
            },
        )
        .field("action", "started anew")
        .emit();
}

/// Replaces `path` with `bytes`: a reader sees the old file or the new one, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable only once the directory is synced.
    std::fs::File::open(dir)?.sync_all()
}

type SnapshotFn = dyn Fn() -> Snapshot + Send + Sync;

struct Shared {
    path: PathBuf,
    label: &'static str,
    /// Set by `wake`, cleared by the writer.
    wake: Mutex<bool>,
    woken: Condvar,
    /// One write at a time (the writer thread and `flush`).
    writing: Mutex<()>,
}

/// Writes a state file in the background: at once after [`Saver::wake`], and every `interval`
/// when the owner has something unsaved (last-seen times that need not cost a write each).
#[derive(Clone)]
pub struct Saver {
    shared: Arc<Shared>,
    snapshot: Arc<SnapshotFn>,
}

impl Saver {
    /// Starts the writer thread for `path`. `snapshot` is asked for the bytes to write; it
    /// answers [`Snapshot::Gone`] when its owner has been dropped, which ends the thread.
    pub fn start(
        path: PathBuf,
        label: &'static str,
        interval: Duration,
        snapshot: impl Fn() -> Snapshot + Send + Sync + 'static,
    ) -> Saver {
        let saver = Saver {
            shared: Arc::new(Shared {
                path,
                label,
                wake: Mutex::new(false),
                woken: Condvar::new(),
                writing: Mutex::new(()),
            }),
            snapshot: Arc::new(snapshot),
        };
        let weak = Arc::downgrade(&saver.shared);
        let snapshot = saver.snapshot.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{label}-writer"))
            .spawn(move || run(weak, snapshot, interval));
        if let Err(e) = spawned {
            log::warn("state_file_writer")
                .field("file", saver.shared.path.display())
                .field("error", e)
                .field("detail", "changes are written only at shutdown")
                .emit();
        }
        saver
    }

    /// Something worth writing at once changed.
    pub fn wake(&self) {
        if let Ok(mut wake) = self.shared.wake.lock() {
            *wake = true;
            self.shared.woken.notify_one();
        }
    }

    /// Writes what is unsaved now, in the caller's thread (shutdown).
    pub fn flush(&self) {
        save(&self.shared, self.snapshot.as_ref());
    }
}

fn run(shared: Weak<Shared>, snapshot: Arc<SnapshotFn>, interval: Duration) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        {
            let Ok(wake) = strong.wake.lock() else { return };
            let Ok((mut wake, _)) = strong.woken.wait_timeout_while(wake, interval, |w| !*w) else {
                return;
            };
            *wake = false;
        }
        if !save(&strong, snapshot.as_ref()) {
            return;
        }
    }
}

/// One write of whatever is unsaved; `false` when the owner is gone.
fn save(shared: &Shared, snapshot: &SnapshotFn) -> bool {
    let Ok(_writing) = shared.writing.lock() else {
        return false;
    };
    match snapshot() {
        Snapshot::Gone => false,
        Snapshot::Clean => true,
        Snapshot::Dirty(bytes) => {
            if let Err(e) = write_atomically(&shared.path, &bytes) {
                crate::metrics::state_file_error(shared.label, "write");
                log::warn("state_file_write_failed")
                    .field("file", shared.path.display())
                    .field("error", e)
                    .field("detail", "kept in memory; retried at the next change")
                    .emit();
            }
            true
        }
    }
}
