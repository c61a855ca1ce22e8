//! The run directory (language.md section 4): `plan.json`, a copy of the sources,
//! `metrics.jsonl`, `checkpoints/<stage>/*.safetensors`, `exports/`, `eval.json`,
//! `report.md`. Every file is written atomically (a temporary file in the same directory,
//! fsync, rename), so a crash leaves either the old file or the new one, never half of one.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
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
        if crate::fault::write_fails(path) {
            // As a full disk does it: part of the file written, then the error.
            f.write_all(&bytes[..bytes.len() / 2])?;
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (injected by PEXC_FAULTS)",
            ));
        }
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

/// A lock on a run directory: a second `pexc run` into it refuses. An advisory lock
/// (`flock`) on `.lock`, which the kernel releases when its process ends however it ends
/// (SIGKILL, a crash, a power cut), so a dead run never leaves a directory locked; the file
/// holds the owner's pid for the message. The file itself stays.
pub struct Lock {
    _file: File,
}

impl Lock {
    pub fn acquire(dir: &RunDir) -> Result<Lock, String> {
        let path = dir.path(".lock");
        let cannot =
            |e: &dyn std::fmt::Display| format!("cannot lock `{}`: {e}", dir.root.display());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| cannot(&e))?;
        match file.try_lock() {
            Ok(()) => {
                // Best effort: the pid is only for the message of a run that is refused.
                let _ = file.set_len(0);
                let _ = file.seek(SeekFrom::Start(0));
                let _ = writeln!(file, "{}", std::process::id());
                let _ = file.sync_all();
                Ok(Lock { _file: file })
            }
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let owner = match text.trim().parse::<u32>() {
                    Ok(pid) => format!(" (pid {pid})"),
                    Err(_) => String::new(),
                };
                Err(format!(
                    "`{}` is in use by another pexc run{owner}; wait for it to finish or choose another --out",
                    dir.root.display()
                ))
            }
            Err(TryLockError::Error(e)) => Err(cannot(&e)),
        }
    }
}

/// Removes the temporary files of atomic writes that a killed process left behind (call
/// with the lock held: no live process is writing them). Returns how many.
pub fn clean_temporaries(dir: &RunDir) -> usize {
    fn walk(d: &Path, n: &mut usize) {
        let Ok(entries) = fs::read_dir(d) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&p, n),
                Ok(t)
                    if t.is_file()
                        && name.starts_with('.')
                        && name.contains(".tmp-")
                        && fs::remove_file(&p).is_ok() =>
                {
                    *n += 1;
                }
                _ => {}
            }
        }
    }
    let mut n = 0;
    walk(&dir.root, &mut n);
    n
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
        let message = Lock::acquire(&d).err().unwrap_or_default();
        assert!(
            message.contains(&format!(
                "is in use by another pexc run (pid {})",
                std::process::id()
            )),
            "{message}"
        );
        drop(first);
        // A lock file left by a process that no longer exists holds no lock.
        fs::write(d.path(".lock"), "4000000000\n").expect("write");
        assert!(Lock::acquire(&d).is_ok());
        let _ = fs::remove_dir_all(&d.root);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let d = tmp("full");
        let p = d.join("checkpoints/core/step-00000004.safetensors");
        write_atomic(&p, b"the good checkpoint").expect("write");
        crate::fault::inject(crate::fault::Fault::WriteFail {
            path_contains: format!("pexc-rundir-full-{}", std::process::id()),
        });
        let e = write_atomic(&p, b"the next one, never whole").expect_err("injected");
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(fs::read(&p).expect("read"), b"the good checkpoint");
        let names: Vec<String> = fs::read_dir(p.parent().expect("dir"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["step-00000004.safetensors"]);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn temporaries_of_a_killed_writer_are_cleaned() {
        let d = RunDir::create(&tmp("clean")).expect("dir");
        write_atomic(&d.path("checkpoints/a/step-00000002.safetensors"), b"ok").expect("w");
        fs::write(
            d.path("checkpoints/a/.step-00000004.safetensors.tmp-77"),
            b"ha",
        )
        .expect("w");
        fs::write(d.path(".eval.json.tmp-78"), b"{").expect("w");
        assert_eq!(clean_temporaries(&d), 2);
        assert!(d.path("checkpoints/a/step-00000002.safetensors").is_file());
        assert_eq!(clean_temporaries(&d), 0);
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
