use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong in the log layer.
///
/// Each message says what happened, where, and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A file operation failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being attempted, as a verb phrase ("write to", "open").
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Another log (in this process or another one) owns the directory.
    #[error(
        "{} is in use by another Orcastra log; stop the other process or choose another directory",
        path.display()
    )]
    Locked {
        /// The locked directory or file.
        path: PathBuf,
    },

    /// The data path names a file where a directory was expected, or the reverse.
    #[error("{} is a {found}, not a {expected}", path.display())]
    WrongKind {
        /// The path.
        path: PathBuf,
        /// What the log needs there ("directory" or "file").
        expected: &'static str,
        /// What is there.
        found: &'static str,
    },

    /// The directory holds files that Orcastra did not write.
    #[error(
        "{} holds files that are not an Orcastra log (such as {example}); \
         use an empty directory or one that Orcastra created",
        dir.display()
    )]
    ForeignDirectory {
        /// The directory.
        dir: PathBuf,
        /// One of the foreign names.
        example: String,
    },

    /// A file that should be a segment or text log is something else.
    #[error("{} is not an Orcastra log file: {reason}; move it out of the way", path.display())]
    NotALogFile {
        /// The file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },

    /// A record that was durable (or lies before durable records) is damaged.
    #[error(
        "corrupt log: {} at byte {position}: {kind}; the data there cannot be trusted, \
         restore this file from a backup (`orcastra log verify` lists every damaged place)",
        file.display()
    )]
    Corrupt {
        /// The segment or text file.
        file: PathBuf,
        /// Byte position of the damaged record in that file.
        position: u64,
        /// What is wrong with it.
        kind: CorruptKind,
    },

    /// A record is larger than the log accepts.
    #[error("a record of {size} bytes exceeds the limit of {max} bytes; nothing was appended")]
    RecordTooLarge {
        /// The record's size.
        size: usize,
        /// The configured limit.
        max: usize,
    },

    /// A batch is larger than a segment can ever hold.
    #[error(
        "a batch of {size} bytes exceeds the limit of {max} bytes; nothing was appended, \
         append it in smaller batches"
    )]
    BatchTooLarge {
        /// The batch's encoded size.
        size: u64,
        /// The most one append may write.
        max: u64,
    },

    /// An earlier write or fsync failed; the log refuses writes until reopened.
    ///
    /// After a failed fsync, Linux may drop the unwritten pages and report the
    /// next fsync as a success, so continuing could acknowledge lost data.
    #[error(
        "the log stopped accepting writes after an earlier failure ({cause}); \
         fix the cause (disk full? failing disk?) and reopen the log"
    )]
    Poisoned {
        /// The failure that poisoned the log.
        cause: Arc<io::Error>,
    },

    /// The requested offset was removed by retention.
    #[error("offset {requested} was removed by retention; the log now starts at {start}")]
    OffsetTrimmed {
        /// The offset asked for.
        requested: u64,
        /// The first offset still in the log.
        start: u64,
    },

    /// The requested offset is past the end of the log.
    #[error("offset {requested} is past the end of the log, which ends at {end}")]
    OffsetPastEnd {
        /// The offset asked for.
        requested: u64,
        /// The offset the next record will get.
        end: u64,
    },

    /// An option is out of range.
    #[error("invalid log option: {0}")]
    InvalidOption(String),
}

impl LogError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| LogError::Io {
            action,
            path,
            source,
        }
    }
}

/// What is wrong with a damaged record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptKind {
    /// The record's checksum does not match its bytes.
    ChecksumMismatch,
    /// The record's header is all zeros: space was allocated but never written.
    ZeroedHeader,
    /// The record runs past the end of the file.
    Truncated,
    /// The record carries another offset than its place in the log.
    WrongOffset {
        /// The offset that belongs here.
        expected: u64,
        /// The offset the record carries.
        found: u64,
    },
    /// The file ends before all the records it must hold.
    MissingRecords {
        /// The offset the file should end at.
        expected_end: u64,
        /// The offset it does end at.
        found_end: u64,
    },
    /// The file is shorter than the part of it that was made durable.
    SyncedDataLost {
        /// How far the file was known to be durable.
        synced: u64,
        /// Where its valid records end.
        valid_end: u64,
    },
    /// A segment's header is damaged or does not fit the segment.
    BadHeader(String),
    /// A line of a text log cannot be parsed.
    BadLine(String),
}

impl fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptKind::ChecksumMismatch => write!(f, "checksum mismatch"),
            CorruptKind::ZeroedHeader => write!(f, "zero-filled record header"),
            CorruptKind::Truncated => write!(f, "record cut off by the end of the file"),
            CorruptKind::WrongOffset { expected, found } => {
                write!(f, "record has offset {found} where {expected} belongs")
            }
            CorruptKind::MissingRecords {
                expected_end,
                found_end,
            } => write!(
                f,
                "records end at offset {found_end} but must reach {expected_end}"
            ),
            CorruptKind::SyncedDataLost { synced, valid_end } => write!(
                f,
                "valid records end at byte {valid_end} but bytes up to {synced} were made durable"
            ),
            CorruptKind::BadHeader(why) => write!(f, "bad segment header ({why})"),
            CorruptKind::BadLine(why) => write!(f, "unreadable line ({why})"),
        }
    }
}
