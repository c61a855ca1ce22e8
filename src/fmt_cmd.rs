//! `pexc fmt FILE...`: rewrites files in their canonical layout (language.md section 3).
//! `--check` only reports the files that would change; `-` formats stdin to stdout.
//! Exit 0 ok, 1 syntax errors or (with `--check`) files that would change, 2 I/O errors.

use std::fs;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use pexc_compiler::fmt::{format_bytes, FmtError};

use crate::render::{self, Style};

#[derive(clap::Args, Debug)]
pub struct FmtArgs {
    /// The .pex files to format in place; `-` reads stdin and writes stdout.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Change nothing: list the files that are not formatted (on stderr) and exit 1 if any.
    #[arg(long)]
    pub check: bool,
}

/// `pexc fmt`, reading `-` from the process's stdin.
pub fn fmt(args: &FmtArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    fmt_with_stdin(args, &mut std::io::stdin(), out, err)
}

/// `pexc fmt` with `-` read from `stdin`: formatted stdin to `out`, everything else to `err`.
pub fn fmt_with_stdin(
    args: &FmtArgs,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let style = Style {
        color: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        width: 100,
    };
    let mut io_failed = false;
    let mut failed = false;
    let mut unformatted = false;
    for path in &args.files {
        let is_stdin = path.as_os_str() == "-";
        let display = if is_stdin {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        let read = if is_stdin {
            let mut bytes = Vec::new();
            stdin.read_to_end(&mut bytes).map(|_| bytes)
        } else {
            read_file(path)
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                let _ = writeln!(err, "pexc: cannot read `{display}`: {}", io_reason(&e));
                io_failed = true;
                continue;
            }
        };
        let formatted = match format_bytes(&display, &bytes) {
            Ok(f) => f,
            Err(FmtError::Invalid { sources, problems }) => {
                for p in &problems.list {
                    let _ = write!(err, "{}", render::human(p, &sources, style));
                }
                failed = true;
                continue;
            }
            Err(e @ FmtError::Internal(_)) => {
                let _ = writeln!(err, "pexc: `{display}` left unchanged: {e}");
                failed = true;
                continue;
            }
        };
        let changed = formatted.as_bytes() != bytes.as_slice();
        if args.check {
            if changed {
                let _ = writeln!(err, "{display}: not formatted");
                unformatted = true;
            }
        } else if is_stdin {
            if let Err(e) = out.write_all(formatted.as_bytes()) {
                let _ = writeln!(err, "pexc: cannot write to stdout: {}", io_reason(&e));
                io_failed = true;
            }
        } else if changed {
            if let Err(e) = replace(path, formatted.as_bytes()) {
                let _ = writeln!(err, "pexc: cannot write `{display}`: {}", io_reason(&e));
                io_failed = true;
            }
        }
    }
    if io_failed {
        2
    } else if failed || unformatted {
        1
    } else {
        0
    }
}

/// As the checker reads: a directory is an error, and at most one byte past the size
/// limit is read (the formatter then refuses the file as too large).
fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    pexc_compiler::Loader::read(&pexc_compiler::FsLoader, path)
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Replaces the file's content atomically: a temporary file in the same directory (so the
/// rename stays on one file system), with the original's permissions, renamed over it.
/// A symbolic link is followed, so the link stays a link.
fn replace(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let target = fs::canonicalize(path)?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let permissions = fs::metadata(&target)?.permissions();
    let (tmp, mut file) = create_temp(dir, &name)?;
    let written = file
        .write_all(content)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::set_permissions(&tmp, permissions))
        .and_then(|()| fs::rename(&tmp, &target));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// A new file `.NAME.pexc-fmt.PID.N` next to `NAME`, never one that exists.
fn create_temp(dir: &Path, name: &str) -> std::io::Result<(PathBuf, fs::File)> {
    let pid = std::process::id();
    let mut n = 0u32;
    loop {
        let tmp = dir.join(format!(".{name}.pexc-fmt.{pid}.{n}"));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(e),
        }
    }
}
