//! `DataError`: every way loading data can fail, each message naming the file at fault.

use std::path::{Path, PathBuf};

/// A data error. Messages name the file (and line, shard or key) at fault so a user can
/// find and fix it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file that cannot be opened or read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line of a JSONL file that is not the expected object.
    #[error("{}:{line}: {message}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// An image that cannot be decoded.
    #[error("cannot decode image `{path}`: {message}")]
    Image { path: String, message: String },
    /// A WebDataset sample without one of its members, or with an unreadable one.
    #[error("shard `{}`, sample `{key}`: {message}", shard.display())]
    Sample {
        shard: PathBuf,
        key: String,
        message: String,
    },
    /// A caption that cannot be used as it is.
    #[error("`{name}`: {message}")]
    Caption { name: String, message: String },
    /// A shard that yields no samples.
    #[error("shard `{}`: {message}", shard.display())]
    Shard { shard: PathBuf, message: String },
    /// A tokenizer file that cannot be used.
    #[error("tokenizer `{}`: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },
    /// A constructor argument that is missing or out of range.
    #[error("`{ctor}`: {message}")]
    Arg { ctor: String, message: String },
    /// Something this runtime does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// An index past the end of a dataset.
    #[error("sample {idx} is out of range: the dataset has {len}")]
    OutOfRange { idx: usize, len: usize },
    /// A malformed batch request, or a loader thread that failed.
    #[error("data loader: {0}")]
    Loader(String),
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> DataError {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn arg(ctor: &str, message: impl Into<String>) -> DataError {
        DataError::Arg {
            ctor: ctor.to_string(),
            message: message.into(),
        }
    }
}
