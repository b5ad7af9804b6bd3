//! TLS reports received from other senders, under `state_directory/received/`: each as the
//! bytes that came (an e-mail `.eml`, or an imported `.json`/`.json.gz`), named by their
//! SHA-256 so the same report taken twice (a sender's retry, an import run again) is kept once.
//! A report is on disk (fsynced, file and directory) before anyone is told it was taken.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The `received` directory.
#[derive(Debug, Clone)]
pub struct ReceivedStore {
    dir: PathBuf,
}

/// What form the stored bytes have (the file's extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Message,
    Json,
    Gzip,
}

impl Form {
    fn extension(self) -> &'static str {
        match self {
            Form::Message => "eml",
            Form::Json => "json",
            Form::Gzip => "json.gz",
        }
    }
}

impl ReceivedStore {
    pub fn open(dir: &Path) -> std::io::Result<ReceivedStore> {
        std::fs::create_dir_all(dir)?;
        Ok(ReceivedStore {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps `bytes` and returns once they are on disk; `false`: the same bytes were kept
    /// before.
    pub fn store(&self, bytes: &[u8], form: Form) -> std::io::Result<(PathBuf, bool)> {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let path = self.dir.join(format!("{hex}.{}", form.extension()));
        if path.exists() {
            return Ok((path, false));
        }
        let temp = self.dir.join(format!(".{hex}.{}.tmp", std::process::id()));
        let written = File::create(&temp)
            .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
            .and_then(|_| std::fs::rename(&temp, &path))
            .and_then(|_| File::open(&self.dir).and_then(|d| d.sync_all()));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.map(|_| (path, true))
    }

    /// Removes the reports kept before `oldest`; returns how many.
    pub fn prune(&self, oldest: std::time::SystemTime) -> std::io::Result<usize> {
        let mut removed = 0;
        for path in self.files()? {
            let modified = std::fs::metadata(&path)?.modified()?;
            if modified < oldest {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The kept reports, by name.
    pub fn files(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
            })
            .collect();
        files.sort();
        Ok(files)
    }
}
