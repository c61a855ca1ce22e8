//! The run directory (language.md section 4): `plan.json`, a copy of the sources,
//! `metrics.jsonl`, `checkpoints/<stage>/*.safetensors`, `exports/`, `eval.json`,
//! `report.md`. Every file is written atomically (a temporary file in the same directory,
//! fsync, rename), so a crash leaves either the old file or the new one, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn create(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        Ok(RunDir {
            root: root.to_path_buf(),
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn checkpoints(&self, stage: &str) -> PathBuf {
        self.root.join("checkpoints").join(stage)
    }

    /// The record of a finished stage: its content hash and final checkpoint.
    pub fn stage_record(&self, stage: &str) -> PathBuf {
        self.root.join("stages").join(format!("{stage}.json"))
    }

    /// Appends one line to `metrics.jsonl`. Appends are not atomic; a torn last line after
    /// a crash is dropped when the file is read back (`read_metrics`).
    pub fn append_metrics(&self, line: &serde_json::Value) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("metrics.jsonl"))?;
        writeln!(f, "{line}")
    }

    /// Every well-formed line of `metrics.jsonl`.
    pub fn read_metrics(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.path("metrics.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Keeps only the metrics of `stage` up to and including `step` (and every other
    /// stage's): on resume, the steps after the checkpoint are run again.
    pub fn truncate_metrics(&self, stage: &str, step: u64) -> io::Result<()> {
        let kept: Vec<String> = self
            .read_metrics()
            .into_iter()
            .filter(|m| m["stage"] != stage || m["step"].as_u64().is_some_and(|s| s <= step))
            .map(|m| m.to_string())
            .collect();
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        write_atomic(&self.path("metrics.jsonl"), text.as_bytes())
    }

    /// Removes every metric of `stage` (it starts afresh).
    pub fn drop_stage_metrics(&self, stage: &str) -> io::Result<()> {
        if !self.path("metrics.jsonl").exists() {
            return Ok(());
        }
        let kept: Vec<String> = self
            .read_metrics()
            .into_iter()
            .filter(|m| m["stage"] != stage)
            .map(|m| m.to_string())
            .collect();
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        write_atomic(&self.path("metrics.jsonl"), text.as_bytes())
    }
}

/// A lock on a run directory: a second `pexc run` into it refuses. The lock file holds the
/// owner's pid; a lock whose process is gone is taken over.
pub struct Lock {
    path: PathBuf,
}

impl Lock {
    pub fn acquire(dir: &RunDir) -> Result<Lock, String> {
        let path = dir.path(".lock");
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    let _ = f.sync_all();
                    return Ok(Lock { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let pid: Option<u32> = fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    match pid {
                        Some(pid) if alive(pid) => {
                            return Err(format!(
                                "`{}` is in use by another pexc run (pid {pid}); wait for it or choose another --out",
                                dir.root.display()
                            ))
                        }
                        // A dead owner: take the lock over.
                        _ => {
                            let _ = fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => return Err(format!("cannot lock `{}`: {e}", dir.root.display())),
            }
        }
        Err(format!("cannot lock `{}`", dir.root.display()))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether a process with this pid exists (Linux: /proc; elsewhere assume it does).
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    if proc.exists() {
        proc.join(pid.to_string()).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pexc-rundir-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let d = tmp("atomic");
        let p = d.join("a/b.txt");
        write_atomic(&p, b"one").expect("write");
        write_atomic(&p, b"two").expect("write");
        assert_eq!(fs::read_to_string(&p).expect("read"), "two");
        let leftovers: Vec<_> = fs::read_dir(d.join("a")).expect("dir").flatten().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_second_lock_refuses_and_a_dead_owner_is_taken_over() {
        let d = RunDir::create(&tmp("lock")).expect("dir");
        let first = Lock::acquire(&d).expect("first");
        let second = Lock::acquire(&d);
        assert!(second.is_err_and(|e| e.contains("in use by another pexc run")));
        drop(first);
        // A lock left by a process that no longer exists.
        fs::write(d.path(".lock"), "4000000000\n").expect("write");
        assert!(Lock::acquire(&d).is_ok());
        let _ = fs::remove_dir_all(&d.root);
    }

    #[test]
    fn metrics_truncate_to_a_step_and_skip_torn_lines() {
        let d = RunDir::create(&tmp("metrics")).expect("dir");
        for step in 1..=5 {
            d.append_metrics(&serde_json::json!({"stage": "core", "step": step}))
                .expect("append");
        }
        d.append_metrics(&serde_json::json!({"stage": "other", "step": 9}))
            .expect("append");
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.path("metrics.jsonl"))
            .expect("open");
        write!(f, "{{\"stage\": \"core\", \"st").expect("torn");
        assert_eq!(d.read_metrics().len(), 6);
        d.truncate_metrics("core", 3).expect("truncate");
        let steps: Vec<u64> = d
            .read_metrics()
            .iter()
            .filter_map(|m| m["step"].as_u64())
            .collect();
        assert_eq!(steps, vec![1, 2, 3, 9]);
        let _ = fs::remove_dir_all(&d.root);
    }
}
